// CPU twin of the mixing buffer's gather (include/topksae/ops_cpu.h, kernels/gather_rows.cu).
#include <cstring>

#include "topksae/ops_cpu.h"

namespace topksae::cpu {

void gather_rows(const float* rows, int64_t d, const int64_t* slots, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) std::memcpy(out + i * d, rows + slots[i] * d, size_t(d) * sizeof(float));
}

}  // namespace topksae::cpu
