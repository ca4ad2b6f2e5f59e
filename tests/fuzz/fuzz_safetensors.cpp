// libFuzzer: the safetensors reader on arbitrary bytes. Any input must either parse into views
// that stay inside the input, or throw topksae::Error; never crash, hang or allocate hugely.
#include <cstddef>
#include <cstdint>

#include "topksae/error.h"
#include "topksae/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    topksae::SafetensorsFile f = topksae::SafetensorsFile::parse(data, size, "fuzz");
    for (const auto& t : f.tensors()) {
      const auto* p = static_cast<const uint8_t*>(t.data);
      if (p < data || p + t.nbytes > data + size) __builtin_trap();  // a view outside the input
      try {
        (void)t.to_f32();  // bounded by the input size: numel*itemsize == nbytes was checked
        if (!t.shape.empty() && t.cols() > 0) {
          std::vector<float> row(static_cast<size_t>(t.cols()));
          if (t.rows() > 0) t.rows_f32(t.rows() - 1, 1, row.data());
        }
      } catch (const topksae::Error&) {  // integer dtypes refuse conversion
      }
    }
    f.metadata();
  } catch (const topksae::Error&) {
  }
  return 0;
}
