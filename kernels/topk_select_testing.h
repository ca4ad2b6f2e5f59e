// Test-only hooks of topk_select (kernels/topk_select.cu): which of its paths each row took.
// Production launches never count: the counters exist only in separate instances of the kernel,
// which topk_select launches while counting is switched on (tests/test_cuda_topk.cpp does, around
// the cases that check the paths). Host code; no CUDA headers needed.
#pragma once
#include <cstdint>

namespace topksae::cuda::detail {

// Rows per path on the current device since the last take_topk_path_rows.
struct TopKPathRows {
  int64_t two_reads = 0;        // the threshold's top radix bin and above fitted the candidates
  int64_t four_reads = 0;       // three radix passes, then the ordered pass (every unsorted row too)
  int64_t one_read = 0;         // the sampled threshold's single collection pass sufficed
  int64_t one_read_missed = 0;  // the one-read pass ran and missed (also counted as two or four reads)
  int64_t vec_passes = 0;       // collection passes (one- or two-read) that used float4 loads
};

// Switches counting on or off for every later topk_select launch in the process (off by default).
void set_topk_path_counting(bool on);
// The counts since the last call, which resets them; synchronises the device.
TopKPathRows take_topk_path_rows();

}  // namespace topksae::cuda::detail
