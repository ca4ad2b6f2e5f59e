// TrainConfig: scheduler names and validation with sae_lens's messages (its JSON and flags:
// config_fields.cpp).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <string>

#include "topksae/error.h"
#include "topksae/train.h"

namespace topksae {

std::string_view lr_scheduler_name(LrScheduler s) {
  switch (s) {
    case LrScheduler::constant: return "constant";
    case LrScheduler::cosineannealing: return "cosineannealing";
    case LrScheduler::cosineannealingwarmrestarts: return "cosineannealingwarmrestarts";
  }
  return "?";
}

LrScheduler lr_scheduler_from_name(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  for (LrScheduler s : {LrScheduler::constant, LrScheduler::cosineannealing, LrScheduler::cosineannealingwarmrestarts})
    if (lr_scheduler_name(s) == lower) return s;
  TOPKSAE_FAIL("unknown lr_scheduler_name '", name,
               "' (expected constant, cosineannealing or cosineannealingwarmrestarts)");
}

SaeConfig TrainConfig::sae_config() const {
  SaeConfig c;
  c.d_in = d_in;
  c.d_sae = d_sae;
  c.k = k;
  c.apply_b_dec_to_input = apply_b_dec_to_input;
  c.normalize = normalize_activations;
  c.dtype = DType::f32;
  return c;  // rescale_acts_by_decoder_norm is not an SaeConfig field: final_sae folds it away
}

void TrainConfig::validate() const {
  sae_config().validate();
  // AuxK uses k_aux = d_in // 2 and divides by it (sae_lens would raise ZeroDivisionError).
  TOPKSAE_CHECK(d_in >= 2, "d_in must be >= 2 for training (AuxK uses d_in // 2), got ", d_in);
  TOPKSAE_CHECK(normalize_activations == Normalize::none || normalize_activations == Normalize::expected_average_only_in,
                "normalize_activations '", normalize_name(normalize_activations),
                "' is not supported for training (use none or expected_average_only_in)");
  TOPKSAE_CHECK(n_batches_for_norm_estimate >= 1, "n_batches_for_norm_estimate must be >= 1, got ",
                n_batches_for_norm_estimate);
  TOPKSAE_CHECK(!decoder_init_norm || (std::isfinite(*decoder_init_norm) && *decoder_init_norm > 0),
                "decoder_init_norm must be > 0 (or null), got ", decoder_init_norm.value_or(0));
  TOPKSAE_CHECK(std::isfinite(aux_loss_coefficient) && aux_loss_coefficient >= 0,
                "aux_loss_coefficient must be >= 0, got ", aux_loss_coefficient);
  TOPKSAE_CHECK(std::isfinite(lr) && lr > 0, "lr must be > 0, got ", lr);
  TOPKSAE_CHECK(adam_beta1 >= 0 && adam_beta1 < 1, "adam_beta1 must be in [0, 1), got ", adam_beta1);
  TOPKSAE_CHECK(adam_beta2 >= 0 && adam_beta2 < 1, "adam_beta2 must be in [0, 1), got ", adam_beta2);
  TOPKSAE_CHECK(batch_size >= 1, "batch_size must be >= 1, got ", batch_size);
  TOPKSAE_CHECK(training_tokens >= batch_size, "training_tokens (", training_tokens,
                ") must be at least one batch (batch_size ", batch_size, ")");
  // 0 is sae_lens's too: dead when it did not fire in the previous step (since_fired > 0).
  TOPKSAE_CHECK(dead_feature_window >= 0, "dead_feature_window must be >= 0, got ", dead_feature_window);
  TOPKSAE_CHECK(feature_sampling_window >= 1, "feature_sampling_window must be >= 1, got ", feature_sampling_window);
  TOPKSAE_CHECK(lr_warm_up_steps >= 0, "lr_warm_up_steps must be >= 0, got ", lr_warm_up_steps);
  TOPKSAE_CHECK(lr_decay_steps >= 0, "lr_decay_steps must be >= 0, got ", lr_decay_steps);
  TOPKSAE_CHECK(!lr_end || (std::isfinite(*lr_end) && *lr_end >= 0), "lr_end must be >= 0, got ", lr_end.value_or(0));
  TOPKSAE_CHECK(n_restart_cycles >= 1, "n_restart_cycles must be >= 1, got ", n_restart_cycles);
  const int64_t T = total_training_steps();
  const int64_t M = T - lr_warm_up_steps - lr_decay_steps;
  TOPKSAE_CHECK(M >= 0, "lr_warm_up_steps (", lr_warm_up_steps, ") + lr_decay_steps (", lr_decay_steps,
                ") exceed the total training steps (", T, " = training_tokens // batch_size)");
  if (lr_scheduler_name == LrScheduler::cosineannealing)
    TOPKSAE_CHECK(M >= 1, "cosineannealing needs at least one step between warm-up and decay (total ", T,
                  ", warm-up ", lr_warm_up_steps, ", decay ", lr_decay_steps, ")");
  if (lr_scheduler_name == LrScheduler::cosineannealingwarmrestarts)
    TOPKSAE_CHECK(M / n_restart_cycles >= 1, "cosineannealingwarmrestarts needs a period (steps between warm-up and decay, ",
                  M, ", // n_restart_cycles, ", n_restart_cycles, ") of at least 1");
  // sae_lens get_lr_scheduler: the constant scheduler replaces lr_end by lr before this check.
  if (lr_decay_steps > 0 && lr_scheduler_name != LrScheduler::constant && effective_lr_end() == 0.0)
    TOPKSAE_FAIL("Cannot have decay_steps with lr_end=0.0, this would decay from 0 to 0 and be a waste.");
}

}  // namespace topksae
