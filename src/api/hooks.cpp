// Hook point names (sae_lens's attribute names) and the per-call observer registry.
#include <algorithm>
#include <string>

#include "topksae/api.h"

namespace topksae {

namespace {
constexpr std::string_view kNames[kHookPointCount] = {"hook_sae_input",     "hook_sae_acts_pre", "hook_sae_acts_post",
                                                      "hook_sae_recons",    "hook_sae_error",    "hook_sae_output"};
}

std::string_view hook_name(HookPoint p) { return kNames[size_t(p)]; }

HookPoint hook_from_name(std::string_view name) {
  for (int i = 0; i < kHookPointCount; ++i)
    if (kNames[i] == name) return HookPoint(i);
  throw InvalidArgument(concat("unknown hook point '", std::string(name),
                               "' (expected hook_sae_input, hook_sae_acts_pre, hook_sae_acts_post, hook_sae_recons, "
                               "hook_sae_error or hook_sae_output)"));
}

Hooks::Id Hooks::add(HookPoint p, HookFn fn) {
  if (size_t(p) >= slots_.size()) throw InvalidArgument(concat("Hooks::add: no hook point ", int(p)));
  if (!fn) throw InvalidArgument(concat("Hooks::add: empty observer for ", hook_name(p)));
  const Id id = next_id_++;
  slots_[size_t(p)].emplace_back(id, std::move(fn));
  return id;
}

bool Hooks::remove(Id id) {
  for (auto& slot : slots_) {
    auto it = std::find_if(slot.begin(), slot.end(), [id](const auto& e) { return e.first == id; });
    if (it != slot.end()) {
      slot.erase(it);
      return true;
    }
  }
  return false;
}

void Hooks::clear() {
  for (auto& slot : slots_) slot.clear();
}

bool Hooks::empty() const {
  return std::all_of(slots_.begin(), slots_.end(), [](const auto& s) { return s.empty(); });
}

void Hooks::run(const HookView& view) const {
  for (const auto& [id, fn] : slots_[size_t(view.point)]) fn(view);
}

HookFn Hooks::clamp_latent(int64_t latent, float value) {
  if (latent < 0) throw InvalidArgument(concat("clamp_latent: latent ", latent, " is negative"));
  return [latent, value](const HookView& v) {
    if (v.device != Device::cpu)
      throw InvalidArgument(concat("clamp_latent: the ready-made observer runs on host memory; ", hook_name(v.point),
                                   " is on ", device_name(v.device)));
    if (latent >= v.cols)
      throw InvalidArgument(concat("clamp_latent: latent ", latent, " out of range [0, ", v.cols, ") at ",
                                   hook_name(v.point)));
    for (int64_t b = 0; b < v.rows; ++b) v.data[b * v.cols + latent] = value;
  };
}

}  // namespace topksae
