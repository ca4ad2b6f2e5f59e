// The table of TrainConfig fields: one row per field (its sae_lens name, its `topksae train` flag,
// its help line and the member it reads and writes). The JSON of a config (checkpoints, run.json,
// --config files, the Python bindings' dicts) and the command-line flags are both made from it, so
// a new field is one row here and one member in train.h.
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <variant>

#include "topksae/error.h"
#include "topksae/train.h"

namespace topksae {

namespace {
using json = nlohmann::ordered_json;

// The member a row reads and writes; its type says how its values are written and parsed.
using Member = std::variant<int64_t TrainConfig::*, uint64_t TrainConfig::*, double TrainConfig::*,
                            bool TrainConfig::*, std::optional<double> TrainConfig::*, Normalize TrainConfig::*,
                            LrScheduler TrainConfig::*>;

struct Row {
  TrainConfigField field;
  Member member;
  std::string_view alias = {};  // a second JSON key read (never written)
};

// In the order of the JSON (and of `topksae train --help`).
const std::vector<Row>& rows() {
  static const std::vector<Row> r = {
      {{"d_in", "--d-in", "input width (default: the data's; the synthetic preset's without --data)"},
       &TrainConfig::d_in},
      {{"d_sae", "--d-sae", "number of latents (default with --data: 16 * d_in)"}, &TrainConfig::d_sae},
      {{"k", "--k", "latents kept per token"}, &TrainConfig::k},
      {{"apply_b_dec_to_input", "--apply-b-dec-to-input", "subtract b_dec from the input"},
       &TrainConfig::apply_b_dec_to_input},
      {{"normalize_activations", "--normalize-activations", "none or expected_average_only_in"},
       &TrainConfig::normalize_activations},
      {{"n_batches_for_norm_estimate", "--n-batches-for-norm-estimate", "batches read to estimate the scaling factor"},
       &TrainConfig::n_batches_for_norm_estimate},
      {{"decoder_init_norm", "--decoder-init-norm", "norm of the initial decoder rows, or none"},
       &TrainConfig::decoder_init_norm},
      {{"aux_loss_coefficient", "--aux-loss-coefficient", "AuxK loss weight"}, &TrainConfig::aux_loss_coefficient},
      {{"rescale_acts_by_decoder_norm", "--rescale-acts-by-decoder-norm",
        "select on h * ||W_dec row|| (sae_lens 6.14's option; folded away on the final save)"},
       &TrainConfig::rescale_acts_by_decoder_norm},
      {{"lr", "--lr", "learning rate"}, &TrainConfig::lr},
      {{"adam_beta1", "--adam-beta1", "Adam beta1"}, &TrainConfig::adam_beta1},
      {{"adam_beta2", "--adam-beta2", "Adam beta2"}, &TrainConfig::adam_beta2},
      {{"lr_scheduler_name", "--lr-scheduler-name", "constant, cosineannealing or cosineannealingwarmrestarts"},
       &TrainConfig::lr_scheduler_name},
      {{"lr_warm_up_steps", "--lr-warm-up-steps", "linear warm-up steps"}, &TrainConfig::lr_warm_up_steps},
      {{"lr_decay_steps", "--lr-decay-steps", "linear decay steps at the end"}, &TrainConfig::lr_decay_steps},
      {{"lr_end", "--lr-end", "final learning rate (default: lr / 10)"}, &TrainConfig::lr_end},
      {{"n_restart_cycles", "--n-restart-cycles", "cycles of cosineannealingwarmrestarts"},
       &TrainConfig::n_restart_cycles},
      {{"train_batch_size_tokens", "--batch-size", "tokens per step (sae_lens train_batch_size_tokens)"},
       &TrainConfig::batch_size, "batch_size"},
      {{"training_tokens", "--training-tokens", "tokens to train on"}, &TrainConfig::training_tokens},
      {{"dead_feature_window", "--dead-feature-window",
        "a latent is dead when it has not fired for more than this many steps (0: in the previous step)"},
       &TrainConfig::dead_feature_window},
      {{"feature_sampling_window", "--feature-sampling-window", "steps per feature-density window"},
       &TrainConfig::feature_sampling_window},
      {{"seed", "--seed", "initialisation and shuffling seed"}, &TrainConfig::seed},
  };
  return r;
}

const Row& row(std::string_view key) {
  for (const Row& r : rows())
    if (r.field.key == key || (!r.alias.empty() && r.alias == key)) return r;
  TOPKSAE_FAIL("unknown key '", key, "'");
}

template <class... F>
struct Overload : F... {
  using F::operator()...;
};
template <class... F>
Overload(F...) -> Overload<F...>;

json get(const TrainConfig& c, const Member& m) {
  return std::visit(
      Overload{[&](std::optional<double> TrainConfig::*p) { return (c.*p) ? json(*(c.*p)) : json(); },
               [&](Normalize TrainConfig::*p) { return json(std::string(normalize_name(c.*p))); },
               [&](LrScheduler TrainConfig::*p) { return json(std::string(lr_scheduler_name(c.*p))); },
               [&](auto p) { return json(c.*p); }},
      m);
}

// JSON numbers written by Python may be floats holding integers (2e6): taken when exact.
int64_t to_int64(const json& v) {
  if (v.is_number_unsigned()) {
    TOPKSAE_CHECK(v.get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max()), "expected an integer below 2^63");
    return v.get<int64_t>();
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::abs(d) < 9.2e18) return int64_t(d);
  }
  TOPKSAE_FAIL("expected an integer");
}

void set(TrainConfig& c, const Member& m, const json& v) {
  std::visit(Overload{[&](int64_t TrainConfig::*p) { c.*p = to_int64(v); },
                      [&](uint64_t TrainConfig::*p) {
                        if (v.is_number_unsigned()) {
                          c.*p = v.get<uint64_t>();
                          return;
                        }
                        const int64_t i = to_int64(v);
                        TOPKSAE_CHECK(i >= 0, "expected an integer >= 0");
                        c.*p = uint64_t(i);
                      },
                      [&](double TrainConfig::*p) {
                        TOPKSAE_CHECK(v.is_number(), "expected a number");
                        c.*p = v.get<double>();
                      },
                      [&](bool TrainConfig::*p) {
                        TOPKSAE_CHECK(v.is_boolean(), "expected true or false");
                        c.*p = v.get<bool>();
                      },
                      [&](std::optional<double> TrainConfig::*p) {
                        TOPKSAE_CHECK(v.is_null() || v.is_number(), "expected a number or null");
                        c.*p = v.is_null() ? std::nullopt : std::optional(v.get<double>());
                      },
                      [&](Normalize TrainConfig::*p) {
                        TOPKSAE_CHECK(v.is_string(), "expected a name");
                        c.*p = normalize_from_name(v.get<std::string>());
                      },
                      [&](LrScheduler TrainConfig::*p) {
                        TOPKSAE_CHECK(v.is_string(), "expected a name");
                        c.*p = lr_scheduler_from_name(v.get<std::string>());
                      }},
             m);
}

// A command-line word as the JSON value it stands for.
json from_text(const Member& m, std::string_view t) {
  const std::string s(t);
  auto number = [&]() {
    json v = json::parse(s, nullptr, /*allow_exceptions=*/false);
    TOPKSAE_CHECK(v.is_number(), "expected a number, got '", s, "'");
    return v;
  };
  return std::visit(
      Overload{[&](bool TrainConfig::*) {
                 for (const char* w : {"true", "1", "yes", "on"})
                   if (s == w) return json(true);
                 for (const char* w : {"false", "0", "no", "off"})
                   if (s == w) return json(false);
                 TOPKSAE_FAIL("expected true or false, got '", s, "'");
               },
               [&](std::optional<double> TrainConfig::*) { return s == "none" || s == "null" ? json() : number(); },
               [&](Normalize TrainConfig::*) { return json(s); },
               [&](LrScheduler TrainConfig::*) { return json(s); },
               [&](auto) { return number(); }},
      m);
}
}  // namespace

const std::vector<TrainConfigField>& train_config_fields() {
  static const std::vector<TrainConfigField> f = [] {
    std::vector<TrainConfigField> v;
    for (const Row& r : rows()) v.push_back(r.field);
    return v;
  }();
  return f;
}

std::string train_config_get(const TrainConfig& cfg, std::string_view key) { return get(cfg, row(key).member).dump(); }

void train_config_set_json(TrainConfig& cfg, std::string_view key, std::string_view json_value) {
  const Row& r = row(key);
  json v = json::parse(json_value, nullptr, /*allow_exceptions=*/false);
  TOPKSAE_CHECK(!v.is_discarded(), "bad value for '", key, "': not JSON: ", json_value);
  try {
    set(cfg, r.member, v);
  } catch (const Error& e) {
    TOPKSAE_FAIL("bad value for '", key, "': ", json_value, " (", e.what(), ")");
  }
}

void train_config_set_text(TrainConfig& cfg, std::string_view key, std::string_view text) {
  const Row& r = row(key);
  set(cfg, r.member, from_text(r.member, text));
}

std::string train_config_to_json(const TrainConfig& c) {
  json j = json::object();
  for (const Row& r : rows()) j[std::string(r.field.key)] = get(c, r.member);
  return j.dump(2);
}

TrainConfig train_config_from_json(std::string_view text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    TOPKSAE_FAIL("training config: invalid JSON: ", e.what());
  }
  TOPKSAE_CHECK(j.is_object(), "training config: expected a JSON object");
  TrainConfig c;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const Row* r = nullptr;
    for (const Row& x : rows())
      if (x.field.key == it.key() || (!x.alias.empty() && x.alias == it.key())) r = &x;
    TOPKSAE_CHECK(r != nullptr, "training config: unknown key '", it.key(), "'");
    try {
      set(c, r->member, it.value());
    } catch (const Error& e) {
      TOPKSAE_FAIL("training config: bad value for '", it.key(), "': ", it.value().dump(), " (", e.what(), ")");
    }
  }
  return c;
}

}  // namespace topksae
