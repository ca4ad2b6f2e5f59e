// bench_data: the host data path of `topksae train --data`, stage by stage, on files it writes
// itself (npy, safetensors and a sae_lens-style Arrow cache, float32 and float16), beside the
// memcpy ceiling measured in the same binary. Every stage is timed over whole passes of the data
// (best of --reps) after checking what it delivered: each row is a row of the file, none twice,
// as many as sae_lens's buffer hands out, and the shuffled stages in another order than the file.
//
//   plain      FileSource::next: the rows in file order, converted to float32 and checked for
//              NaN/Inf (the baseline: a plain sequential read)
//   mixing     ShuffleBuffer (sae_lens's mixing buffer, --buffer-batches) on one thread
//   prefetch   PrefetchSource in front of it with its gather threads (what `train` builds)
//   pipeline   the same into two alternating staging buffers, pinned when a GPU is usable (the
//              trainer's CUDA backend reads into those): the whole host path; ratio = its time
//              over plain's
//   noshuffle  --shuffle none: PrefetchSource over FileSource
//
// The files go into a temporary directory (--dir to choose it) and are removed at the end unless
// --keep. The default, 120000 rows of d_in 2304 (1.1 GB per float32 file, 5 GB for the six), is the
// dataset of issue 18.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>
#include <unistd.h>
#include <unordered_set>

#include "arrow_write.h"
#include "bench_common.h"
#include "topksae/buffer.h"
#include "topksae/device.h"
#include "topksae/dtype.h"
#include "topksae/error.h"
#include "topksae/file_source.h"
#include "topksae/npy.h"
#include "topksae/prefetch.h"
#include "topksae/safetensors.h"
#include "topksae/shuffle_buffer.h"

namespace topksae::bench {
namespace {
namespace fs = std::filesystem;
using clk = std::chrono::steady_clock;

struct DataArgs {
  int64_t rows = 120000, d_in = 2304, batch = 4096, buffer_batches = 16, ctx = 120;
  int reps = 3, threads = 0;
  std::vector<std::string> formats = {"npy", "safetensors", "arrow"}, dtypes = {"f32", "f16"};
  std::string dir, json_path;
  bool keep = false, tiny = false, write_only = false;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream is(s);
  for (std::string x; std::getline(is, x, ',');)
    if (!x.empty()) v.push_back(x);
  return v;
}

void usage() {
  std::printf(
      "bench_data: the host data path of topksae train --data, stage by stage, against a plain read and memcpy\n"
      "  --rows N            rows per file (default 120000)\n"
      "  --d-in D            row width (default 2304)\n"
      "  --batch B           rows per batch (default 4096)\n"
      "  --buffer-batches K  mixing-buffer size in batches (default 16, as topksae train)\n"
      "  --ctx C             Arrow: rows per sequence (default 120; must divide --rows)\n"
      "  --reps R            passes per stage, the best reported (default 3)\n"
      "  --threads T         gather threads (default 0: as topksae train, min(cores, 8))\n"
      "  --formats LIST      npy,safetensors,arrow (default all)\n"
      "  --dtypes LIST       f32,f16 (default both)\n"
      "  --dir DIR           where to write the files (default: a new directory under $TMPDIR or /tmp)\n"
      "  --keep              keep the files\n"
      "  --write-only        write the files (kept) and print their paths; no timing (tools/train_data_check.sh)\n"
      "  --tiny              3000 rows of 64, batches of 128, one pass: a smoke run\n"
      "  --json PATH         write the results as JSON\n");
}

DataArgs parse(int argc, char** argv) {
  DataArgs a;
  bool rows = false, d = false, batch = false, buf = false, ctx = false, reps = false;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    auto next = [&]() -> std::string {
      TOPKSAE_CHECK(i + 1 < argc, "bench_data: ", s, " needs a value");
      return argv[++i];
    };
    auto num = [&]() -> int64_t {
      const std::string v = next();
      try {
        return std::stoll(v);
      } catch (const std::exception&) {
        TOPKSAE_FAIL("bench_data: ", s, " wants a number, got '", v, "'");
      }
    };
    if (s == "--help" || s == "-h") {
      usage();
      std::exit(0);
    } else if (s == "--rows") a.rows = num(), rows = true;
    else if (s == "--d-in") a.d_in = num(), d = true;
    else if (s == "--batch") a.batch = num(), batch = true;
    else if (s == "--buffer-batches") a.buffer_batches = num(), buf = true;
    else if (s == "--ctx") a.ctx = num(), ctx = true;
    else if (s == "--reps") a.reps = int(num()), reps = true;
    else if (s == "--threads") a.threads = int(num());
    else if (s == "--formats") a.formats = split(next());
    else if (s == "--dtypes") a.dtypes = split(next());
    else if (s == "--dir") a.dir = next();
    else if (s == "--keep") a.keep = true;
    else if (s == "--write-only") a.write_only = a.keep = true;
    else if (s == "--tiny") a.tiny = true;
    else if (s == "--json") a.json_path = next();
    else {
      usage();
      TOPKSAE_FAIL("bench_data: unknown argument '", s, "'");
    }
  }
  if (a.tiny) {
    if (!rows) a.rows = 3000;
    if (!d) a.d_in = 64;
    if (!batch) a.batch = 128;
    if (!buf) a.buffer_batches = 4;
    if (!ctx) a.ctx = 12;
    if (!reps) a.reps = 1;
  }
  TOPKSAE_CHECK(a.rows > 0 && a.d_in > 0 && a.batch > 0 && a.buffer_batches > 0 && a.reps > 0 && a.ctx > 0,
                "bench_data: sizes and --reps must be > 0");
  TOPKSAE_CHECK(a.rows % a.ctx == 0, "bench_data: --ctx ", a.ctx, " must divide --rows ", a.rows);
  TOPKSAE_CHECK(a.rows >= a.batch * a.buffer_batches, "bench_data: --rows must hold at least one mixing buffer (",
                a.batch * a.buffer_batches, " rows)");
  for (auto& f : a.formats)
    TOPKSAE_CHECK(f == "npy" || f == "safetensors" || f == "arrow", "bench_data: unknown format '", f, "'");
  for (auto& t : a.dtypes) TOPKSAE_CHECK(t == "f32" || t == "f16", "bench_data: unknown dtype '", t, "'");
  return a;
}

// Random values (a fixed xorshift stream): distinct rows, so a row is recognised by its first values.
std::vector<float> make_values(int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (auto& f : v) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    f = float(int64_t(x >> 40) - (int64_t(1) << 23)) / float(1 << 21);  // [-4, 4), exact in f16 often enough
  }
  return v;
}

fs::path write_dataset(const DataArgs& a, const fs::path& dir, const std::string& format, bool f16,
                       const void* data) {
  const DType t = f16 ? DType::f16 : DType::f32;
  const std::string stem = std::string(f16 ? "f16" : "f32");
  if (format == "npy") {
    const fs::path p = dir / (stem + ".npy");
    write_npy(p, t, {a.rows, a.d_in}, data);
    return p;
  }
  if (format == "safetensors") {
    const fs::path p = dir / (stem + ".safetensors");
    SafetensorsWriter w;
    w.add("acts", t, {a.rows, a.d_in}, data);
    w.write(p);
    return p;
  }
  // Arrow: a directory of two data-0000i-of-00002.arrow shards + state.json, as sae_lens leaves it.
  const fs::path p = dir / (stem + "_arrow");
  fs::create_directories(p);
  const int64_t seqs = a.rows / a.ctx, half = seqs / 2, isz = f16 ? 2 : 4;
  const uint8_t* b = static_cast<const uint8_t*>(data);
  write_arrow_acts(p / "data-00000-of-00002.arrow", "blocks.0.hook_resid_pre", f16, b, half, a.ctx, a.d_in, 128);
  write_arrow_acts(p / "data-00001-of-00002.arrow", "blocks.0.hook_resid_pre", f16,
                   b + size_t(half * a.ctx * a.d_in * isz), seqs - half, a.ctx, a.d_in, 128);
  std::ofstream(p / "state.json") << R"({"_data_files": [{"filename": "data-00000-of-00002.arrow"},)"
                                  << R"( {"filename": "data-00001-of-00002.arrow"}], "_fingerprint": "0"})";
  return p;
}

// A hash of a row's first 32 values (float16 data repeats values often; 32 of them do not collide).
uint64_t row_key(const float* row, int64_t d) {
  uint64_t k = 0xcbf29ce484222325ull;
  for (int64_t i = 0; i < std::min<int64_t>(d, 32); ++i) {
    uint32_t b;
    std::memcpy(&b, row + i, 4);
    k = (k ^ b) * 0x100000001b3ull;
    k ^= k >> 29;
  }
  return k;
}

// One pass of a stage: the rows it delivers, and their keys (when asked).
struct Pass {
  int64_t rows = 0;
  double s = 0;
};

struct Stage {
  std::string name;
  // Makes the source of one pass.
  std::function<std::unique_ptr<ActivationSource>()> make;
  int buffers = 1;   // destinations used in turn (the trainer's two staging slots)
  bool pinned = false;
};

Pass run_pass(const Stage& st, const DataArgs& a, std::vector<HostBuffer>& dst, std::vector<uint64_t>* keys) {
  auto src = st.make();
  Pass p;
  const auto t0 = clk::now();
  for (int64_t i = 0;; ++i) {
    float* out = static_cast<float*>(dst[size_t(i % st.buffers)].data());
    const int64_t n = src->next(out, a.batch);
    if (keys)
      for (int64_t r = 0; r < n; ++r) keys->push_back(row_key(out + r * a.d_in, a.d_in));
    p.rows += n;
    if (n < a.batch) break;
  }
  p.s = std::chrono::duration<double>(clk::now() - t0).count();
  return p;
}

// The memcpy ceiling: batch-sized copies from a buffer larger than the caches into one
// destination, on one thread, and on `threads` threads that each copy their share of every batch
// (started once, so no per-batch synchronisation: an upper bound for any gather).
double memcpy_gbps(const std::vector<float>& from, int64_t batch, int64_t d, int threads, int reps) {
  const size_t per = size_t(batch) * size_t(d);
  std::vector<float> dst(per);
  auto copy_share = [&](int t, int n) {
    const size_t a = per * size_t(t) / size_t(n), b = per * size_t(t + 1) / size_t(n);
    for (size_t o = 0; o + per <= from.size(); o += per) std::memcpy(dst.data() + a, from.data() + o + a, (b - a) * 4);
  };
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = clk::now();
    if (threads <= 1) {
      copy_share(0, 1);
    } else {
      std::vector<std::thread> ts;
      for (int t = 0; t < threads; ++t) ts.emplace_back(copy_share, t, threads);
      for (auto& t : ts) t.join();
    }
    best = std::min(best, std::chrono::duration<double>(clk::now() - t0).count());
  }
  const double bytes = double(from.size() / per * per) * 4;
  return bytes / best / 1e9;
}

std::string cpu_name() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

int run(int argc, char** argv) {
  const DataArgs a = parse(argc, argv);
  Args report_args;
  report_args.tiny = a.tiny;
  report_args.json_path = a.json_path;
  Report report("bench_data", report_args);

  fs::path dir = a.dir;
  const bool own_dir = dir.empty();
  if (own_dir) {
    const char* tmp = std::getenv("TMPDIR");
    dir = fs::path(tmp && *tmp ? tmp : "/tmp") / ("topksae_bench_data_" + std::to_string(::getpid()));
  }
  fs::create_directories(dir);
  struct Cleanup {
    fs::path dir;
    bool keep, own;
    ~Cleanup() {
      std::error_code ec;
      if (!keep) {
        if (own) fs::remove_all(dir, ec);
        else
          for (const char* n : {"f32.npy", "f16.npy", "f32.safetensors", "f16.safetensors", "f32_arrow", "f16_arrow"})
            fs::remove_all(dir / n, ec);
      }
    }
  } cleanup{dir, a.keep, own_dir};

  const unsigned hw = std::thread::hardware_concurrency();
  const int threads = a.threads > 0 ? a.threads : int(std::clamp(hw, 1u, 8u));
  std::printf("bench_data: %lld rows x %lld, batch %lld, mixing buffer %lld batches, %d gather threads, %u cores "
              "(%s); files in %s\n",
              (long long)a.rows, (long long)a.d_in, (long long)a.batch, (long long)a.buffer_batches, threads, hw,
              cpu_name().c_str(), dir.c_str());

  const std::vector<float> values = make_values(a.rows * a.d_in);
  if (a.write_only) {
    for (const std::string& dt : a.dtypes) {
      std::vector<uint16_t> halves;
      if (dt == "f16") {
        halves.resize(values.size());
        convert_from_f32(DType::f16, values.data(), halves.data(), values.size());
      }
      const void* data = dt == "f16" ? static_cast<const void*>(halves.data()) : values.data();
      for (const std::string& format : a.formats) std::printf("%s\n", write_dataset(a, dir, format, dt == "f16", data).c_str());
    }
    return 0;
  }
  nlohmann::json ceilings;
  ceilings["memcpy_1thread_GBps"] = memcpy_gbps(values, a.batch, a.d_in, 1, a.reps);
  ceilings["memcpy_GBps"] = memcpy_gbps(values, a.batch, a.d_in, threads, a.reps);
  report.set_ceilings(ceilings);

  const bool gpu = cuda_available();
  const int64_t buffer_rows = a.buffer_batches * a.batch;
  const int64_t mixed_rows = a.rows / a.batch * a.batch;  // the mixing buffer drops the partial batch
  std::vector<HostBuffer> dst;
  for (int i = 0; i < 2; ++i) dst.emplace_back(size_t(a.batch * a.d_in) * 4, HostMemory::pageable);
  std::vector<HostBuffer> staging;
  for (int i = 0; i < 2; ++i)
    staging.emplace_back(size_t(a.batch * a.d_in) * 4, gpu ? HostMemory::pinned : HostMemory::pageable);

  int failures = 0;
  for (const std::string& dt : a.dtypes) {
    const bool f16 = dt == "f16";
    std::vector<uint16_t> halves;
    if (f16) {
      halves.resize(values.size());
      convert_from_f32(DType::f16, values.data(), halves.data(), values.size());
    }
    const void* data = f16 ? static_cast<const void*>(halves.data()) : values.data();
    for (const std::string& format : a.formats) {
      const fs::path path = write_dataset(a, dir, format, f16, data);
      auto ds = FileDataset::open(path);
      TOPKSAE_CHECK(ds->rows() == a.rows && ds->d_in() == a.d_in, path.string(), ": read back as ", ds->describe());
      const std::string shape = concat(format, " ", dt, " ", a.rows, "x", a.d_in);
      auto files = [ds] { return std::make_unique<FileSource>(ds); };
      auto shuffled = [=] { return std::make_unique<ShuffleBuffer>(files(), buffer_rows, a.batch, 42); };
      const std::vector<Stage> stages = {
          {"plain", [=] { return files(); }, 1, false},
          {"mixing", [=] { return shuffled(); }, 1, false},
          {"prefetch", [=] { return std::make_unique<PrefetchSource>(shuffled(), a.batch, 4, threads); }, 1, false},
          {"pipeline", [=] { return std::make_unique<PrefetchSource>(shuffled(), a.batch, 4, threads); }, 2, gpu},
          {"noshuffle", [=] { return std::make_unique<PrefetchSource>(files(), a.batch, 4, threads); }, 1, false},
      };
      // Validate: what each stage delivers, against the plain read's rows.
      std::vector<uint64_t> plain_keys;
      run_pass(stages[0], a, dst, &plain_keys);
      const std::unordered_set<uint64_t> known(plain_keys.begin(), plain_keys.end());
      bool ok = int64_t(plain_keys.size()) == a.rows && int64_t(known.size()) == a.rows;
      std::string why = ok ? "" : concat("the plain read gave ", plain_keys.size(), " rows, ", known.size(), " distinct");
      for (size_t s = 1; s < stages.size() && ok; ++s) {
        std::vector<uint64_t> keys;
        run_pass(stages[s], a, stages[s].pinned ? staging : dst, &keys);
        const bool shuffles = stages[s].name != "noshuffle";
        const int64_t want = shuffles ? mixed_rows : a.rows;
        std::unordered_set<uint64_t> seen;
        for (uint64_t k : keys) ok &= known.count(k) == 1 && seen.insert(k).second;
        ok &= int64_t(keys.size()) == want && (shuffles ? keys != std::vector<uint64_t>(plain_keys.begin(),
                                                                                         plain_keys.begin() + want)
                                                         : keys == plain_keys);
        if (!ok) why = concat(stages[s].name, " delivered ", keys.size(), " rows (", want, " expected), ", seen.size(),
                              " distinct, or rows not in the file, or in the wrong order");
      }
      if (!ok) {
        ++failures;
        report.add({{"shape", shape}, {"variant", "all"}, {"skipped", "validation failed: " + why}});
        continue;
      }
      double plain_s = 0;
      for (const Stage& st : stages) {
        Pass best;
        best.s = 1e30;
        for (int r = 0; r < a.reps; ++r) {
          Pass p = run_pass(st, a, st.pinned ? staging : dst, nullptr);
          if (p.s < best.s) best = p;
        }
        if (st.name == "plain") plain_s = best.s;
        const double gbps = double(best.rows) * double(a.d_in) * 4 / best.s / 1e9;
        nlohmann::json row = {{"shape", shape},
                              {"variant", st.name},
                              {"ms", best.s * 1e3 / (double(best.rows) / double(a.batch))},
                              {"GBps", gbps},
                              {"file_GBps", double(best.rows) * double(a.d_in) * (f16 ? 2 : 4) / best.s / 1e9},
                              {"rows_per_s", double(best.rows) / best.s},
                              {"pass_s", best.s},
                              {"rows", best.rows},
                              {"threads", st.name == "plain" || st.name == "mixing" ? 1 : threads}};
        // Time per row against the plain read's (the mixing buffer hands out whole batches only).
        const double ratio = (best.s / double(best.rows)) / (plain_s / double(a.rows));
        row["ratio_to_plain"] = ratio;
        row["note"] = concat(int64_t(double(best.rows) / best.s), " rows/s, ", ratio, "x plain's time per row",
                             st.pinned ? ", pinned" : "");
        report.add(row);
      }
    }
  }
  report.finish();
  if (failures) std::fprintf(stderr, "bench_data: %d dataset(s) failed validation\n", failures);
  return failures ? 1 : 0;
}

}  // namespace
}  // namespace topksae::bench

int main(int argc, char** argv) {
  try {
    return topksae::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_data: %s\n", e.what());
    return 1;
  }
}
