// libFuzzer: a `datasets` save_to_disk directory (sae_lens's activation cache) made from the
// fuzzer's bytes (fuzz_files.h): state.json, data-a.arrow, data-b.arrow (an empty part: the file
// is absent), opened with FileDataset::open, which reads the files in state.json's order. What
// opens must read: every row of the dataset, through read_rows.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_files.h"
#include "topksae/error.h"
#include "topksae/file_source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace topksae;
  const auto parts = fuzz::unpack(data, size, 3);
  const auto dir = fuzz::fresh_dir("ds");
  const char* names[] = {"state.json", "data-a.arrow", "data-b.arrow"};
  for (size_t i = 0; i < 3; ++i)
    if (!parts[i].empty()) fuzz::write_file(dir / names[i], parts[i]);
  std::shared_ptr<const FileDataset> ds;
  try {
    ds = FileDataset::open(dir);
  } catch (const Error&) {
    return 0;
  }
  if (ds->rows() < 1 || ds->d_in() < 1 || ds->shards() < 1) __builtin_trap();
  if (ds->rows() * ds->d_in() > (int64_t(1) << 22)) return 0;  // real, but too big to read each time
  std::vector<float> rows(size_t(ds->rows() * ds->d_in()));
  try {
    ds->read_rows(0, ds->rows(), rows.data());
  } catch (const Error&) {  // a value the reader refuses (its message names the file)
  }
  return 0;
}
