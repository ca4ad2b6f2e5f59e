// libFuzzer: the Arrow IPC reader on arbitrary bytes: zero-copy views inside the input whose sizes
// agree with their shapes, or topksae::Error.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "topksae/arrow_ipc.h"
#include "topksae/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    topksae::ArrowStreamFile f = topksae::ArrowStreamFile::parse(data, size, "fuzz");
    int64_t seqs = 0;
    for (const topksae::ArrayView& a : f.batches()) {
      const auto* p = static_cast<const uint8_t*>(a.data);
      if (p < data || a.nbytes > size || p + a.nbytes > data + size) __builtin_trap();
      if (a.shape.size() != 3 || a.shape[1] != f.context_size() || a.shape[2] != f.d_in()) __builtin_trap();
      if (int64_t(a.nbytes) != a.shape[0] * a.shape[1] * a.shape[2] * int64_t(topksae::itemsize(a.dtype)))
        __builtin_trap();
      seqs += a.shape[0];
      std::vector<float> row(static_cast<size_t>(a.cols()));
      a.rows_f32(a.rows() - 1, 1, row.data());  // the last row: the far end of the view
    }
    if (seqs != f.sequences()) __builtin_trap();
  } catch (const topksae::Error&) {
  }
  return 0;
}
