// CPU twins of dead_mask and update_dead_stats (MATH.md, Dead latents and sparsity statistics).
// A latent fires in a token when its top-k value is non-zero (AuxK selections do not count).
#include "topksae/train.h"

namespace topksae::cpu {

int64_t dead_mask(const SparsityStats& s, int64_t window, uint8_t* dead) {
  int64_t count = 0;
  for (size_t j = 0; j < s.since_fired.size(); ++j) {
    dead[j] = s.since_fired[j] > window ? 1 : 0;
    count += dead[j];
  }
  return count;
}

template <typename T>
void update_dead_stats(const TrainForward<T>& f, SparsityStats* s) {
  for (int64_t& c : s->since_fired) ++c;
  for (int64_t e = 0; e < f.B * f.k; ++e) {
    if (f.z[size_t(e)] == T(0)) continue;
    const size_t j = size_t(f.idx[size_t(e)]);
    s->since_fired[j] = 0;
    ++s->act_freq[j];
  }
  s->n_frac_active += f.B;
}

template void update_dead_stats<float>(const TrainForward<float>&, SparsityStats*);
template void update_dead_stats<double>(const TrainForward<double>&, SparsityStats*);

}  // namespace topksae::cpu
