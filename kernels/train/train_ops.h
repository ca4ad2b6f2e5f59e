// The CUDA training step's phases, one launcher per op, each queued on the given stream (no
// synchronisation): the CUDA side of src/cpu/train_forward.cpp, train_backward.cpp,
// update_dead_stats.cpp, clip_grad_norm.cpp and adam_step.cpp. kernels/train_step.cu strings them
// together; tests/test_cuda_<phase>.cpp check each phase against its CPU twin.
//   train_forward.cu      u = s*x - a*b_dec, relu, column sums, per-row losses and loss gradients
//   train_aux.cu          AuxK's dense sub-problem over the dead latents (compaction, gathers,
//                         scatter, the dza mask) and AuxK's k and scale
//   train_backward.cu     dz, the entries regrouped by latent, dW_dec, dW_enc + db_enc, db_dec
//   update_dead_stats.cu  the dead mask, firing counts, since_fired, the sparsity metrics
//   clip_grad_norm.cu     the gradients' squared norm and the clip factor
//   adam_step.cu          the fused Adam update (+ the bf16 copy of W_enc)
// Pointers are device memory; shapes are written beside each argument. Host code may include
// this header (it needs only the CUDA runtime's types).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "topksae/ops_cuda.h"

namespace topksae::cuda::train {

// Values the step computes on the device to steer later kernels (never summed).
struct StepControl {
  double aux_scale;      // min(n_dead / (d_in/2), 1)
  int32_t k_aux;         // min(d_in/2, n_dead): AuxK's k this step (0: no AuxK)
  int32_t aux_overflow;  // the dead count exceeded the host's bound (a bug): the host throws
  float clip;            // min(1, max_norm / (grad_norm + eps))
};

// Sums and counts the step reports (zeroed at the start of each step, copied back at its end).
struct DevMetrics {
  double mse_sum, aux_sum, tv_sum, nnz;  // sums over rows
  double sumsq;                          // squared norm of all four gradients
  double grad_norm;
  double log10_sparsity_sum;
  unsigned long long n_dead_before, dead_after, since_sum, below5, below6;
  unsigned long long near_dead;  // #{since > window - DeadBound::kLag} after this step's update
};

// One step's device record: zeroed together, copied back to the host together.
struct StepRecord {
  DevMetrics metrics;
  StepControl control;
};

// ---- train_forward.cu ---------------------------------------------------------------------------
// u [B, d] = s * x - b_dec (b_dec null: no subtraction).
void prep_input(cudaStream_t st, const float* x, float s, const float* b_dec, int64_t B, int64_t d, float* u);
// z [count] = max(h, 0).
void relu(cudaStream_t st, const float* h, float* z, int64_t count);
// out[c] = post * sum_b (A[b, c] + A2[b, c]) over A, A2 [B, d] (A2 may be null), in double, in a
// fixed order; writes outd (double [d]) and / or outf (float [d]), either may be null.
void column_sums(cudaStream_t st, const float* A, const float* A2, int64_t B, int64_t d, double post, double* outd,
                 float* outf);
// Per row b: g [B, d] = (2/B)(xhat - s*x), ga [B, d] = (2 coef scale / B)(ehat - (s*x - xhat))
// (zeros without ehat), stats [B, 4] = {||xhat - s*x||^2, ||ehat - r||^2, ||s*x - mu||^2,
// nnz(z_b)}; x, xhat, ehat [B, d], mu double [d], z [B, k].
void loss_rows(cudaStream_t st, const float* x, float s, const float* xhat, const float* ehat, const double* mu,
               const float* z, int64_t B, int64_t d, int64_t k, double aux_coef, const StepControl* C, float* g,
               float* ga, double* stats);
// M->{mse_sum, aux_sum, tv_sum, nnz} = the column sums of stats [B, 4].
void reduce_loss_rows(cudaStream_t st, const double* stats, int64_t B, DevMetrics* M);

// ---- train_aux.cu -------------------------------------------------------------------------------
// C->k_aux, C->aux_scale from M->n_dead_before (MATH.md); C->aux_overflow when it exceeds bound.
void aux_params(cudaStream_t st, int64_t half_d, int64_t bound, const DevMetrics* M, StepControl* C);
// CUB scan storage for compact_dead over n latents.
size_t compact_dead_tmp_bytes(int64_t n);
// dead_list [ndc] = the dead latents in index order (-1 padding), pos_of [n] = a latent's compact
// position or -1, from dead32 int32 [n]; pos int32 [n] is scratch (the exclusive scan).
void compact_dead(cudaStream_t st, const int32_t* dead32, int64_t n, int64_t ndc, int32_t* pos, void* tmp,
                  size_t tmp_bytes, int32_t* dead_list, int32_t* pos_of, StepControl* C);
// Hc [rows, ndc] = h [rows, n] at the dead columns + b_enc, -inf in the padding.
void gather_dead_cols(cudaStream_t st, const float* h, const float* b_enc, const int32_t* dead_list, int64_t rows,
                      int64_t n, int64_t ndc, float* Hc);
// Zd [B, ndc] = 0, then Zd[b, rT[b, i]] = hT[b, i] for i < k_aux (rT, hT [B, kc]).
void scatter_aux(cudaStream_t st, const int32_t* rT, const float* hT, int64_t B, int64_t kc, int64_t ndc,
                 const StepControl* C, float* Zd);
// Wd_dead [ndc, d] = W_dec [n, d] at dead_list's rows, zero rows for the padding.
void gather_dead_rows(cudaStream_t st, const float* W_dec, const int32_t* dead_list, int64_t ndc, int64_t d,
                      float* Wd_dead);
// G [B, ndc]: keeps each row's k_aux selected entries (rT [B, kc]), zeroes the rest (dza).
void mask_aux_grad(cudaStream_t st, const int32_t* rT, int64_t B, int64_t kc, int64_t ndc, const StepControl* C,
                   float* G);

// ---- update_dead_stats.cu -----------------------------------------------------------------------
// M->log10_sparsity_sum, below5, below6 of act_freq int64 [n] over n_frac rows.
void sparsity_metrics(cudaStream_t st, const int64_t* act_freq, int64_t n, double n_frac, DevMetrics* M);
// dead [n] (bytes) and dead32 int32 [n] = since > window; M->n_dead_before = their count.
void dead_mask(cudaStream_t st, const int64_t* since, int64_t n, int64_t window, uint8_t* dead, int32_t* dead32,
               DevMetrics* M);
// For each entry of idx / z [total] with z != 0: fired[idx] = 1, act_freq[idx] += 1.
void mark_fired(cudaStream_t st, const int32_t* idx, const float* z, int64_t total, uint8_t* fired,
                int64_t* act_freq);
// since [n] = fired ? 0 : since + 1, fired = 0; M->dead_after, since_sum, near_dead.
void update_since(cudaStream_t st, int64_t* since, uint8_t* fired, int64_t n, int64_t window, DevMetrics* M);

// The per-step constants of torch.optim.Adam step t, rounded to float as the CPU twin rounds them
// (adam_step.cu); the clip factor comes from StepControl on the device.
struct AdamParams {
  float b1, b2, one_b1, one_b2, step_size, bc2_sqrt, eps;
};

// ---- train_backward.cu --------------------------------------------------------------------------
// The backward's per-entry arrays: `per` elements each. Entry p: S entries p = b*k + i (i < k);
// T entries (gather AuxK) p = B*k + b*kT + i (i < k_aux).
struct EntryArrays {
  float* w;            // the dW_dec coefficient: z (S) or za (T)
  float* dh;           // dz * [h > 0] (S) or dza (T)
  int32_t *keys, *keys2, *vals, *vals2;  // the radix sort's double buffers
};
// Carves the six arrays from base [6 * per] (floats and int32 have the same size).
EntryArrays carve_entries(float* base, int64_t per);
// w and dh of every entry, one warp per entry over whole rows of W_dec [n, d] (g, ga [B, d];
// idxS, hS [B, k]; idxT, hT [B, kT]; kT = 0: S entries only).
void dz_rows(cudaStream_t st, const float* W_dec, const float* g, const float* ga, const int32_t* idxS,
             const float* hS, const int32_t* idxT, const float* hT, int64_t B, int64_t d, int64_t k, int64_t kT,
             const StepControl* C, const EntryArrays& ea);
// The S entries' w and dh swept over column slabs of W_dec (tpt threads per row: 16, 32, 64 or
// 128; d % 4 == 0, 16-byte aligned rows); part [slabs, B*k] is scratch.
void dz_slabs(cudaStream_t st, int tpt, const float* W_dec, const float* g, const int32_t* idxS, const float* hS,
              int64_t B, int64_t d, int64_t k, int64_t slabs, float* part, const EntryArrays& ea);
// CUB sort storage for sort_entries over `count` entries.
size_t sort_entries_tmp_bytes(int64_t count, int sort_bits);
// Regroups the B*(k + kT) entries by latent (a stable radix sort of their latents; T slots past
// k_aux sort last): start int32 [n + 1] = each latent's first sorted position; returns the sorted
// entry numbers (one of ea.vals / ea.vals2).
const int32_t* sort_entries(cudaStream_t st, const int32_t* idxS, const int32_t* idxT, int64_t B, int64_t k,
                            int64_t kT, int64_t n, int sort_bits, const StepControl* C, void* tmp, size_t tmp_bytes,
                            const EntryArrays& ea, int32_t* start);
// dW_dec [n, d]: row j = sum over j's entries of w * (g or ga) row, plus row pos_of[j] of dWd_dead
// [ndc, d] for a dead latent (pos_of null: none). Adds its squared norm to M->sumsq.
void grad_dec(cudaStream_t st, const int32_t* start, const int32_t* order, const float* w, const float* g,
              const float* ga, int64_t B, int64_t d, int64_t n, int64_t k, int64_t kT, const int32_t* pos_of,
              const float* dWd_dead, float* dW_dec, DevMetrics* M);
// dW_enc [d, n]: column j = sum over j's entries of dh * u row, db_enc [n] = sum of dh, plus (pos_of
// not null) dWe_dead [ndc, d] (dW_enc's dead columns, transposed) and dbe_dead [ndc]. Adds the
// squared norm of both to M->sumsq.
void grad_enc(cudaStream_t st, const int32_t* start, const int32_t* order, const float* dh, const float* u, int64_t B,
              int64_t d, int64_t n, int64_t k, int64_t kT, const int32_t* pos_of, const float* dWe_dead,
              const float* dbe_dead, float* dW_enc, float* db_enc, DevMetrics* M);
// The fused gradient mode (TrainStepOptions::grad_storage, no dense gradient stored): the same
// sums as grad_dec / grad_enc, in the same order, run twice. FusedPass::norm adds the block's
// squared norm to M->sumsq and stores nothing (grad_enc_fused still writes db_enc [n], which
// db_dec needs); FusedPass::adam, after clip_factor, recomputes each value and applies clip +
// Adam straight to the block's parameters and moments (AdamBlock), refreshing the bf16 copy of
// W_enc when w16 is set. Both passes give bit for bit the values grad_dec / grad_enc store.
enum class FusedPass { norm, adam };
struct AdamBlock {
  float *p = nullptr, *m = nullptr, *v = nullptr;  // the block in the flat arrays ([n, d] or [d, n])
  uint16_t* w16 = nullptr;                         // grad_enc_fused only: bf16 bits of W_enc [d, n]
  const StepControl* C = nullptr;                  // the clip factor
  AdamParams a{};
};
void grad_dec_fused(cudaStream_t st, FusedPass pass, const int32_t* start, const int32_t* order, const float* w,
                    const float* g, const float* ga, int64_t B, int64_t d, int64_t n, int64_t k, int64_t kT,
                    const int32_t* pos_of, const float* dWd_dead, const AdamBlock& blk, DevMetrics* M);
void grad_enc_fused(cudaStream_t st, FusedPass pass, const int32_t* start, const int32_t* order, const float* dh,
                    const float* u, int64_t B, int64_t d, int64_t n, int64_t k, int64_t kT, const int32_t* pos_of,
                    const float* dWe_dead, const float* dbe_dead, float* db_enc, const AdamBlock& blk, DevMetrics* M);
// db_dec [d] = sum_b g_b + sum_b ga_b - a * W_enc @ db_enc (a = apply_b_dec_to_input; W_enc [d, n]).
void grad_bias_dec(Context& ctx, const float* g, const float* ga, int64_t B, int64_t d, bool apply_b_dec,
                   const float* W_enc, const float* db_enc, int64_t n, float* db_dec);

// ---- clip_grad_norm.cu --------------------------------------------------------------------------
// M->sumsq += sum of a[i]^2 over a [count].
void add_sumsq(cudaStream_t st, const float* a, int64_t count, DevMetrics* M);
// M->grad_norm = sqrt(M->sumsq); C->clip = min(1, kClipMaxNorm / (grad_norm + kClipEps)).
void clip_factor(cudaStream_t st, DevMetrics* M, StepControl* C);

// ---- adam_step.cu -------------------------------------------------------------------------------
// torch.optim.Adam step t (1-based) over p, m, v, grad [P] with the gradient scaled by C->clip
// first; refreshes w16 [n_w16] (bf16 bits, may be null) from the first n_w16 new parameters.
void adam(cudaStream_t st, int sm_count, float* p, float* m, float* v, const float* grad, int64_t P,
          const StepControl* C, double lr, double beta1, double beta2, double eps, int64_t t, uint16_t* w16,
          int64_t n_w16);
AdamParams adam_params(double lr, double beta1, double beta2, double eps, int64_t t);
// The same update over p, m, v, grad [count] at any alignment (the fused mode's b_enc and b_dec).
void adam_range(cudaStream_t st, float* p, float* m, float* v, const float* grad, int64_t count, const StepControl* C,
                const AdamParams& a);

}  // namespace topksae::cuda::train
