// Host-side rebuilding of codes after a hook_sae_acts_post observer changed the dense z, shared by
// the CPU and CUDA engines (the CUDA engine runs observers on a host copy of z, so it rebuilds the
// codes on the host too), and the CSR compaction of top-k pairs on the host.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "api/engine.h"

namespace topksae::detail {

// Per-workspace host scratch of the helpers below; grows through EngineWorkspace::grow.
struct HostCodeScratch {
  std::vector<std::pair<float, int32_t>> row;  // [d_sae] one row's non-zeros
  std::vector<int32_t> orig;                   // [k] one row's original selection
  size_t bytes() const { return row.size() * sizeof(row[0]) + orig.size() * 4; }
};

// Top-k pairs idx/val [B, k] from an observed z [B, n]: the non-zeros in pair order (value
// descending, lower index first), then (value 0) the originally selected latents that are now
// zero, in their original order, so an observer that changes nothing leaves the pairs as they
// were. Throws InvalidArgument when a row has more than k non-zeros.
void rebuild_pairs(EngineWorkspace& w, HostCodeScratch& s, const float* z, int64_t B, int64_t n, int64_t k,
                   int32_t* idx, float* val);
// CSR (into a.indptr / a.indices / a.values, all host) from top-k pairs [B, k], zeros dropped.
int64_t csr_from_pairs(const int32_t* idx, const float* val, int64_t B, int64_t k, const EncodeArgs& a);
// CSR from a dense z [B, n], each row in pair order.
int64_t csr_from_dense(EngineWorkspace& w, HostCodeScratch& s, const float* z, int64_t B, int64_t n,
                       const EncodeArgs& a);
// Throws InvalidArgument when nnz does not fit CsrOut::capacity.
void check_csr_capacity(int64_t nnz, int64_t capacity);

}  // namespace topksae::detail
