// TrainConfig: scheduler names, validation with sae_lens's messages, and JSON round trip.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <nlohmann/json.hpp>
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
  return c;
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
  TOPKSAE_CHECK(!rescale_acts_by_decoder_norm,
                "rescale_acts_by_decoder_norm is not implemented (it is a sae_lens 6.14 option; 6.13.1 has no such step)");
  TOPKSAE_CHECK(std::isfinite(lr) && lr > 0, "lr must be > 0, got ", lr);
  TOPKSAE_CHECK(adam_beta1 >= 0 && adam_beta1 < 1, "adam_beta1 must be in [0, 1), got ", adam_beta1);
  TOPKSAE_CHECK(adam_beta2 >= 0 && adam_beta2 < 1, "adam_beta2 must be in [0, 1), got ", adam_beta2);
  TOPKSAE_CHECK(batch_size >= 1, "batch_size must be >= 1, got ", batch_size);
  TOPKSAE_CHECK(training_tokens >= batch_size, "training_tokens (", training_tokens,
                ") must be at least one batch (batch_size ", batch_size, ")");
  TOPKSAE_CHECK(dead_feature_window >= 1, "dead_feature_window must be >= 1, got ", dead_feature_window);
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

// ---- JSON ---------------------------------------------------------------------------------------

std::string train_config_to_json(const TrainConfig& c) {
  nlohmann::ordered_json j;
  j["d_in"] = c.d_in;
  j["d_sae"] = c.d_sae;
  j["k"] = c.k;
  j["apply_b_dec_to_input"] = c.apply_b_dec_to_input;
  j["normalize_activations"] = std::string(normalize_name(c.normalize_activations));
  j["n_batches_for_norm_estimate"] = c.n_batches_for_norm_estimate;
  j["decoder_init_norm"] = c.decoder_init_norm ? nlohmann::ordered_json(*c.decoder_init_norm) : nlohmann::ordered_json();
  j["aux_loss_coefficient"] = c.aux_loss_coefficient;
  j["rescale_acts_by_decoder_norm"] = c.rescale_acts_by_decoder_norm;
  j["lr"] = c.lr;
  j["adam_beta1"] = c.adam_beta1;
  j["adam_beta2"] = c.adam_beta2;
  j["lr_scheduler_name"] = std::string(lr_scheduler_name(c.lr_scheduler_name));
  j["lr_warm_up_steps"] = c.lr_warm_up_steps;
  j["lr_decay_steps"] = c.lr_decay_steps;
  j["lr_end"] = c.lr_end ? nlohmann::ordered_json(*c.lr_end) : nlohmann::ordered_json();
  j["n_restart_cycles"] = c.n_restart_cycles;
  j["train_batch_size_tokens"] = c.batch_size;
  j["training_tokens"] = c.training_tokens;
  j["dead_feature_window"] = c.dead_feature_window;
  j["feature_sampling_window"] = c.feature_sampling_window;
  j["seed"] = c.seed;
  return j.dump(2);
}

TrainConfig train_config_from_json(std::string_view text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    TOPKSAE_FAIL("training config: invalid JSON: ", e.what());
  }
  TOPKSAE_CHECK(j.is_object(), "training config: expected a JSON object");
  TrainConfig c;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const nlohmann::json& v = it.value();
    try {
      if (key == "d_in") c.d_in = v.get<int64_t>();
      else if (key == "d_sae") c.d_sae = v.get<int64_t>();
      else if (key == "k") c.k = v.get<int64_t>();
      else if (key == "apply_b_dec_to_input") c.apply_b_dec_to_input = v.get<bool>();
      else if (key == "normalize_activations") c.normalize_activations = normalize_from_name(v.get<std::string>());
      else if (key == "n_batches_for_norm_estimate") c.n_batches_for_norm_estimate = v.get<int64_t>();
      else if (key == "decoder_init_norm") c.decoder_init_norm = v.is_null() ? std::nullopt : std::optional(v.get<double>());
      else if (key == "aux_loss_coefficient") c.aux_loss_coefficient = v.get<double>();
      else if (key == "rescale_acts_by_decoder_norm") c.rescale_acts_by_decoder_norm = v.get<bool>();
      else if (key == "lr") c.lr = v.get<double>();
      else if (key == "adam_beta1") c.adam_beta1 = v.get<double>();
      else if (key == "adam_beta2") c.adam_beta2 = v.get<double>();
      else if (key == "lr_scheduler_name") c.lr_scheduler_name = lr_scheduler_from_name(v.get<std::string>());
      else if (key == "lr_warm_up_steps") c.lr_warm_up_steps = v.get<int64_t>();
      else if (key == "lr_decay_steps") c.lr_decay_steps = v.get<int64_t>();
      else if (key == "lr_end") c.lr_end = v.is_null() ? std::nullopt : std::optional(v.get<double>());
      else if (key == "n_restart_cycles") c.n_restart_cycles = v.get<int64_t>();
      else if (key == "train_batch_size_tokens" || key == "batch_size") c.batch_size = v.get<int64_t>();
      else if (key == "training_tokens") c.training_tokens = v.get<int64_t>();
      else if (key == "dead_feature_window") c.dead_feature_window = v.get<int64_t>();
      else if (key == "feature_sampling_window") c.feature_sampling_window = v.get<int64_t>();
      else if (key == "seed") c.seed = v.get<uint64_t>();
      else TOPKSAE_FAIL("training config: unknown key '", key, "'");
    } catch (const nlohmann::json::exception& e) {
      TOPKSAE_FAIL("training config: bad value for '", key, "': ", v.dump(), " (", e.what(), ")");
    }
  }
  return c;
}

}  // namespace topksae
