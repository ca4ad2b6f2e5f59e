// libFuzzer: the npy reader on arbitrary bytes: a valid view inside the input or topksae::Error.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "topksae/error.h"
#include "topksae/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    topksae::NpyFile f = topksae::NpyFile::parse(data, size, "fuzz");
    const topksae::ArrayView& a = f.array();
    const auto* p = static_cast<const uint8_t*>(a.data);
    if (p < data || p + a.nbytes > data + size) __builtin_trap();
    try {
      (void)a.to_f32();
      if (!a.shape.empty() && a.cols() > 0 && a.rows() > 0) {
        std::vector<float> row(static_cast<size_t>(a.cols()));
        a.rows_f32(0, 1, row.data());
      }
    } catch (const topksae::Error&) {
    }
  } catch (const topksae::Error&) {
  }
  return 0;
}
