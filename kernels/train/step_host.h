// Host-side pieces both CUDA training steps share (kernels/train_step.cu, the whole model, and
// kernels/train/sharded_step.cu, one rank's block of latents): the flat parameter layout, the
// state's upload and download, and a step's StepMetrics from its device record.
#pragma once
#include <cstdint>

#include "common/device_array.h"
#include "topksae/train.h"
#include "train/train_ops.h"

namespace topksae::cuda::train {

// The flat layout of the parameters, their gradients and both moments:
// [W_enc d x n | b_enc n | W_dec n x d | b_dec d], n the latents held (the shard's when sharded).
struct FlatParams {
  int64_t d, n;
  int64_t oWenc, oBenc, oWdec, oBdec;
};

// Whether st's parameters, moments and statistics have the layout's shapes (the caller's error
// says what it expected).
inline bool state_fits(const TrainState& st, const FlatParams& L) {
  for (const Params<float>* q : {&st.params, &st.adam_m, &st.adam_v})
    if (int64_t(q->W_enc.size()) != L.d * L.n || int64_t(q->b_enc.size()) != L.n ||
        int64_t(q->W_dec.size()) != L.n * L.d || int64_t(q->b_dec.size()) != L.d)
      return false;
  return int64_t(st.stats.since_fired.size()) == L.n && int64_t(st.stats.act_freq.size()) == L.n;
}

// param / m / v <- st's parameters and moments; since / act [n] <- its statistics (state_fits first).
inline void upload_state_arrays(const TrainState& st, const FlatParams& L, detail::DeviceArray<float>& param,
                                detail::DeviceArray<float>& m, detail::DeviceArray<float>& v,
                                detail::DeviceArray<int64_t>& since, detail::DeviceArray<int64_t>& act) {
  const Params<float>* sets[3] = {&st.params, &st.adam_m, &st.adam_v};
  detail::DeviceArray<float>* dst[3] = {&param, &m, &v};
  for (int s = 0; s < 3; ++s) {
    dst[s]->upload(sets[s]->W_enc.data(), L.d * L.n, L.oWenc);
    dst[s]->upload(sets[s]->b_enc.data(), L.n, L.oBenc);
    dst[s]->upload(sets[s]->W_dec.data(), L.n * L.d, L.oWdec);
    dst[s]->upload(sets[s]->b_dec.data(), L.d, L.oBdec);
  }
  since.upload(st.stats.since_fired.data(), L.n);
  act.upload(st.stats.act_freq.data(), L.n);
}

// *q <- the four parameters (or gradients, or a moment) of src in the layout L.
inline void download_params(const detail::DeviceArray<float>& src, const FlatParams& L, Params<float>* q) {
  q->W_enc.resize(size_t(L.d * L.n));
  q->b_enc.resize(size_t(L.n));
  q->W_dec.resize(size_t(L.n * L.d));
  q->b_dec.resize(size_t(L.d));
  src.download(q->W_enc.data(), L.d * L.n, L.oWenc);
  src.download(q->b_enc.data(), L.n, L.oBenc);
  src.download(q->W_dec.data(), L.n * L.d, L.oWdec);
  src.download(q->b_dec.data(), L.d, L.oBdec);
}

// st's parameters, moments and statistics <- the device's (the caller has synchronised).
inline void download_state_arrays(const FlatParams& L, const detail::DeviceArray<float>& param,
                                  const detail::DeviceArray<float>& m, const detail::DeviceArray<float>& v,
                                  const detail::DeviceArray<int64_t>& since, const detail::DeviceArray<int64_t>& act,
                                  TrainState* st) {
  download_params(param, L, &st->params);
  download_params(m, L, &st->adam_m);
  download_params(v, L, &st->adam_v);
  st->stats.since_fired.resize(size_t(L.n));
  st->stats.act_freq.resize(size_t(L.n));
  since.download(st->stats.since_fired.data(), L.n);
  act.download(st->stats.act_freq.data(), L.n);
}

// The logged metrics of a step of B rows from its device record (sums over all N latents of the
// model, also when sharded: the record's counts are all-reduced); meta holds the host's fields.
inline StepMetrics step_metrics_from(const TrainConfig& cfg, StepMetrics meta, const StepRecord& rec, int64_t B,
                                     int64_t N) {
  const DevMetrics& dv = rec.metrics;
  const StepControl& dc = rec.control;
  StepMetrics r = meta;
  const double b = double(B);
  r.mse_loss = dv.mse_sum / b;
  r.auxiliary_reconstruction_loss = dc.k_aux == 0 ? 0 : cfg.aux_loss_coefficient * double(dc.aux_scale) * dv.aux_sum / b;
  r.overall_loss = r.mse_loss + r.auxiliary_reconstruction_loss;
  r.l0 = dv.nnz / b;
  r.explained_variance = 1.0 - dv.mse_sum / dv.tv_sum;
  r.dead_features = int64_t(dv.dead_after);
  r.mean_passes_since_fired = double(dv.since_sum) / double(N);
  r.grad_norm = dv.grad_norm;
  if (r.has_sparsity) {
    r.mean_log10_feature_sparsity = dv.log10_sparsity_sum / double(N);
    r.below_1e_5 = int64_t(dv.below5);
    r.below_1e_6 = int64_t(dv.below6);
  }
  return r;
}

}  // namespace topksae::cuda::train
