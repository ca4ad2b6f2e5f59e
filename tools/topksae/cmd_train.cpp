// `topksae train`: train a TopK SAE on activation files (--data) or on synthetic data with a
// planted dictionary (--synthetic, the default without --data), writing a sae_lens SAE directory.
//
// Output directory layout (--out DIR):
//   DIR/cfg.json, sae_weights.safetensors, sparsity.safetensors   the final SAE (scaling folded in)
//   DIR/checkpoint/        the latest resumable checkpoint (--checkpoint-every, Ctrl-C)
//   DIR/run.json           what --resume needs: the training config and the data description
//   DIR/metrics.jsonl      one line per step, sae_lens metric names (--metrics-log)
//   DIR/report.html        the self-contained report written at the end (--report)
//
// Under `mpirun -np R` (R > 1) the run is latent-sharded over the R ranks (docs/scaling.md): the
// same flags, every rank reads the same data, rank 0 alone prints, logs and writes the SAE
// directory; DIR/checkpoint/ is then a sharded set (src/dist/sharded_files.h).
//
// Config precedence: built-in defaults (or the --synthetic preset), then --config FILE.json, then
// the flags given on the command line.
#include <atomic>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "command.h"
#include "dist/collectives.h"
#include "dist/sharded_files.h"
#include "topksae/atomic_file.h"
#include "topksae/error.h"
#include "topksae/file_source.h"
#include "topksae/prefetch.h"
#include "topksae/report.h"
#include "topksae/safetensors.h"
#include "topksae/sae_dir.h"
#include "topksae/shuffle_buffer.h"
#include "topksae/synthetic.h"
#include "topksae/train.h"

namespace topksae::cli {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

// Where the data comes from; stored in run.json so that --resume rebuilds the same stream.
struct DataSpec {
  std::string path;          // empty: synthetic
  std::string tensor;
  std::string shuffle = "buffer";
  int64_t buffer_batches = 16;
  bool skip_nonfinite = false, loop = false;
  SyntheticConfig synthetic;
  json to_json() const {
    return {{"path", path},
            {"tensor", tensor},
            {"shuffle", shuffle},
            {"buffer_batches", buffer_batches},
            {"skip_nonfinite", skip_nonfinite},
            {"loop", loop},
            {"synthetic",
             {{"d_in", synthetic.d_in},
              {"n_features", synthetic.n_features},
              {"seed", synthetic.seed},
              {"max_freq", synthetic.max_freq},
              {"min_freq", synthetic.min_freq},
              {"min_magnitude", synthetic.min_magnitude},
              {"max_magnitude", synthetic.max_magnitude},
              {"noise_std", synthetic.noise_std}}}};
  }
  static DataSpec from_json(const json& j) {
    DataSpec d;
    d.path = j.at("path").get<std::string>();
    d.tensor = j.at("tensor").get<std::string>();
    d.shuffle = j.at("shuffle").get<std::string>();
    d.buffer_batches = j.at("buffer_batches").get<int64_t>();
    d.skip_nonfinite = j.at("skip_nonfinite").get<bool>();
    d.loop = j.at("loop").get<bool>();
    const json& s = j.at("synthetic");
    d.synthetic.d_in = s.at("d_in").get<int64_t>();
    d.synthetic.n_features = s.at("n_features").get<int64_t>();
    d.synthetic.seed = s.at("seed").get<uint64_t>();
    d.synthetic.max_freq = s.at("max_freq").get<double>();
    d.synthetic.min_freq = s.at("min_freq").get<double>();
    d.synthetic.min_magnitude = s.at("min_magnitude").get<double>();
    d.synthetic.max_magnitude = s.at("max_magnitude").get<double>();
    d.synthetic.noise_std = s.at("noise_std").get<double>();
    return d;
  }
};

struct TrainArgs {
  std::vector<std::function<void(TrainConfig&)>> set_flags;  // one per training flag, applied if given
  std::vector<CLI::Option*> run_defining;  // options fixed by run.json once a run exists
  CLI::App* cmd = nullptr;
  std::string config_file, init, out, resume, device = "auto", precision = "fp32", metrics_log, report;
  std::string model_name, hook_name, dataset_path;
  int64_t checkpoint_every = 0, stop_after_steps = -1, synthetic_features = 256;
  uint64_t synthetic_seed = 1;
  double progress_every = 10;
  bool overwrite = false, synthetic = false, no_report = false;
  DataSpec data;
};

// The --synthetic preset: a run that recovers most of a 256-feature planted dictionary in well
// under a minute on 2 CPU cores.
void synthetic_preset(TrainConfig& c) {
  c.d_in = 48;
  c.d_sae = 512;
  c.k = 8;
  c.batch_size = 512;
  c.training_tokens = 512 * 1200;
  c.lr = 4e-3;
  c.lr_scheduler_name = LrScheduler::cosineannealing;
  c.lr_warm_up_steps = 50;
  c.dead_feature_window = 100;
  c.feature_sampling_window = 500;
  c.normalize_activations = Normalize::expected_average_only_in;
  c.n_batches_for_norm_estimate = 5;
  c.seed = 2;
}

// sae_lens runner-config keys that describe the data rather than the SAE: kept as cfg.json
// metadata when a --config file carries them, instead of being refused as unknown.
const char* const kMetadataKeys[] = {"model_name", "hook_name", "hook_head_index", "dataset_path", "context_size",
                                     "prepend_bos"};

TrainConfig apply_config_file(const TrainConfig& base, const std::string& file, std::map<std::string, std::string>* meta) {
  json patch;
  try {
    patch = json::parse(read_small_file(file));
  } catch (const json::exception& e) {
    TOPKSAE_FAIL(file, ": not valid JSON: ", e.what());
  }
  TOPKSAE_CHECK(patch.is_object(), file, ": expected a JSON object of training config keys");
  for (const char* k : kMetadataKeys)
    if (patch.contains(k)) {
      (*meta)[k] = patch[k].dump();
      patch.erase(k);
    }
  json merged = json::parse(train_config_to_json(base));
  merged.update(patch);
  try {
    return train_config_from_json(merged.dump());
  } catch (const Error& e) {
    TOPKSAE_FAIL(file, ": ", e.what());
  }
}

// Ctrl-C: the first sets the flag (a checkpoint is written after the current step); a second one
// kills the process the usual way.
std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) {
  g_interrupted = true;
  std::signal(SIGINT, SIG_DFL);
}

// The stream the trainer reads: files (through the mixing buffer unless --shuffle none) or the
// synthetic source, behind the prefetch thread. *files / *syn point into it for reporting.
std::unique_ptr<ActivationSource> make_source(const DataSpec& d, const TrainConfig& cfg, FileSource** files,
                                              SyntheticSource** syn) {
  *files = nullptr;
  *syn = nullptr;
  if (d.path.empty()) {
    auto s = std::make_unique<SyntheticSource>(d.synthetic);
    *syn = s.get();
    return std::make_unique<PrefetchSource>(std::move(s), cfg.batch_size, 4);
  }
  auto fsrc = open_file_source(d.path, d.tensor, {.skip_nonfinite = d.skip_nonfinite, .loop = d.loop});
  *files = fsrc.get();
  std::unique_ptr<ActivationSource> src;
  if (d.shuffle == "buffer") {
    TOPKSAE_CHECK(d.buffer_batches >= 1, "--buffer-batches must be >= 1, got ", d.buffer_batches);
    src = std::make_unique<ShuffleBuffer>(std::move(fsrc), d.buffer_batches * cfg.batch_size, cfg.batch_size, cfg.seed);
  } else {
    src = std::move(fsrc);
  }
  return std::make_unique<PrefetchSource>(std::move(src), cfg.batch_size, 4);
}

// Refuses to clear a directory that is not ours, even with --overwrite.
void prepare_out_dir(const fs::path& out, bool overwrite) {
  std::error_code ec;
  if (fs::exists(out, ec)) {
    TOPKSAE_CHECK(overwrite, "--out ", out.string(), " exists; pass --overwrite to replace it, or --resume ",
                  out.string(), " to continue its run");
    TOPKSAE_CHECK(fs::is_directory(out), "--out ", out.string(), " exists and is not a directory");
    bool ours = fs::is_empty(out) || fs::exists(out / "run.json") || fs::exists(out / kSaeCfgFile);
    TOPKSAE_CHECK(ours, "--out ", out.string(),
                  " exists and does not look like a topksae output directory (no run.json or cfg.json); "
                  "not deleting it: remove it yourself or choose another --out");
    fs::remove_all(out, ec);
    TOPKSAE_CHECK(!ec, "cannot remove ", out.string(), ": ", ec.message());
  }
  fs::create_directories(out, ec);
  TOPKSAE_CHECK(!ec, "cannot create --out ", out.string(), ": ", ec.message());
}

// A checkpoint directory that --resume can use: a single-process or a sharded one.
bool has_checkpoint(const fs::path& dir) {
  return fs::exists(dir / "trainer_state.json") || dist::is_sharded_checkpoint(dir);
}

// Ranks other than 0 of a sharded run print nothing on stdout (errors still go to stderr).
struct QuietStdout {
  std::streambuf* saved = nullptr;
  explicit QuietStdout(bool quiet) {
    if (quiet) saved = std::cout.rdbuf(nullptr);
  }
  ~QuietStdout() {
    if (saved) {
      std::cout.rdbuf(saved);
      std::cout.clear();
    }
  }
};

void run_train(TrainArgs& a, const std::shared_ptr<dist::Collectives>& comm) {
  std::signal(SIGXFSZ, SIG_IGN);  // a file-size limit makes writes fail (an Error), not kill us
  const bool rank0 = !comm || comm->rank() == 0;
  QuietStdout quiet(!rank0);
  TrainConfig cfg;
  DataSpec data = a.data;
  std::map<std::string, std::string> meta;  // cfg.json metadata (JSON text per key)
  fs::path out, checkpoint;
  const bool resuming = !a.resume.empty();

  if (resuming) {
    // --resume OUT (or OUT/checkpoint): everything comes from OUT/run.json; only the length of the
    // run (--training-tokens) may change.
    fs::path r = a.resume;
    if (!fs::exists(r / "run.json") && fs::exists(r.parent_path() / "run.json")) r = r.parent_path();
    TOPKSAE_CHECK(fs::exists(r / "run.json"), "--resume ", a.resume, ": no run.json there (expected a directory written by "
                  "topksae train --out)");
    for (CLI::Option* o : a.run_defining)
      TOPKSAE_CHECK(o->count() == 0 || o->get_name() == "--training-tokens", o->get_name(),
                    " cannot change on --resume (the run's settings come from ", (r / "run.json").string(),
                    "); only --training-tokens may");
    out = r;
    checkpoint = r / "checkpoint";
    TOPKSAE_CHECK(has_checkpoint(checkpoint), "--resume ", a.resume,
                  ": no checkpoint to resume from (", checkpoint.string(), " is missing; the run was never checkpointed)");
    json run = json::parse(read_small_file(r / "run.json"));
    cfg = train_config_from_json(run.at("config").dump());
    data = DataSpec::from_json(run.at("data"));
    for (auto& [k, v] : run.at("metadata").items()) meta[k] = v.get<std::string>();
    if (a.cmd->count("--training-tokens")) {
      TrainConfig only_tokens;
      for (auto& f : a.set_flags) f(only_tokens);
      cfg.training_tokens = only_tokens.training_tokens;
    }
    if (a.checkpoint_every == 0) a.checkpoint_every = run.value("checkpoint_every_tokens", int64_t(0));
  } else {
    TOPKSAE_CHECK(!a.out.empty(), "--out DIR is required (where the SAE directory goes)");
    out = a.out;
    // (Sharded: rank 0 alone, in prepare_out_dir below; the others would race with its mkdir.)
    TOPKSAE_CHECK(comm || a.overwrite || !fs::exists(out), "--out ", out.string(), " exists; pass --overwrite to replace it, or --resume ",
                  out.string(), " to continue its run");
    checkpoint = out / "checkpoint";
    if (data.path.empty()) synthetic_preset(cfg);
    TOPKSAE_CHECK(!(a.synthetic && !data.path.empty()), "--synthetic and --data exclude each other");
    if (!a.config_file.empty()) cfg = apply_config_file(cfg, a.config_file, &meta);
    for (auto& f : a.set_flags) f(cfg);
    if (!a.model_name.empty()) meta["model_name"] = json(a.model_name).dump();
    if (!a.hook_name.empty()) meta["hook_name"] = json(a.hook_name).dump();
    if (!a.dataset_path.empty()) meta["dataset_path"] = json(a.dataset_path).dump();
    else if (!data.path.empty()) meta["dataset_path"] = json(data.path).dump();
    if (data.path.empty()) {
      data.synthetic.d_in = cfg.d_in;
      data.synthetic.n_features = a.synthetic_features;
      data.synthetic.seed = a.synthetic_seed;
      data.synthetic.max_freq = 0.05;
      data.synthetic.min_freq = 0.004;
      data.synthetic.noise_std = 0.01;
    }
  }
  // The device and precision are chosen per invocation (not stored in run.json): a checkpoint
  // written on one device resumes on the other.
  const Device device = resolve_device(a.device, true, "training");
  TOPKSAE_CHECK(device == Device::cuda || a.precision == "fp32" || a.device == "auto", "--precision ", a.precision,
                " applies to the GPU's encoder GEMM; --device cpu computes in fp32");
  if (device == Device::cpu && a.precision != "fp32")
    std::cerr << "note: no GPU here (" << cuda_unavailable_reason() << "); training on the CPU in fp32, --precision "
              << a.precision << " ignored\n";
  const cuda::Precision precision = a.precision == "tf32"   ? cuda::Precision::tf32
                                    : a.precision == "bf16" ? cuda::Precision::bf16
                                                            : cuda::Precision::fp32;

  FileSource* files = nullptr;
  SyntheticSource* syn = nullptr;
  std::unique_ptr<ActivationSource> src = make_source(data, cfg, &files, &syn);
  if (!data.path.empty()) {
    TOPKSAE_CHECK(cfg.d_in == 0 || cfg.d_in == src->d_in() || resuming, "--d-in ", cfg.d_in, " disagrees with the data (",
                  src->describe(), ")");
    cfg.d_in = src->d_in();
  }
  if (!data.path.empty() && a.cmd->count("--d-sae") == 0 && !resuming && a.init.empty() && a.config_file.empty())
    cfg.d_sae = 16 * cfg.d_in;  // no d_sae given: a 16x expansion
  std::optional<Sae> init;
  if (!a.init.empty() && !resuming) {
    init = load_sae_dir(a.init);
    TOPKSAE_CHECK(init->cfg.d_in == cfg.d_in, "--init ", a.init, " has d_in ", init->cfg.d_in, ", the data has d_in ",
                  cfg.d_in);
    if (a.cmd->count("--d-sae") == 0) cfg.d_sae = init->cfg.d_sae;
    TOPKSAE_CHECK(init->cfg.d_sae == cfg.d_sae, "--init ", a.init, " has d_sae ", init->cfg.d_sae, ", but --d-sae is ",
                  cfg.d_sae);
    if (a.cmd->count("--k") == 0 && a.config_file.empty() && !data.path.empty()) cfg.k = init->cfg.k;
    TOPKSAE_CHECK(init->cfg.normalize == Normalize::none || init->cfg.normalize == Normalize::expected_average_only_in,
                  "--init ", a.init, " normalises its input with ", normalize_name(init->cfg.normalize),
                  ", which training does not support");
  }
  TOPKSAE_CHECK(cfg.k <= cfg.d_sae, "k (", cfg.k, ") must not exceed d_sae (", cfg.d_sae, ")");
  cfg.validate();
  TOPKSAE_CHECK(!comm || !init, "--init is not supported by latent-sharded runs yet; start one process from --init, "
                "or a sharded run from scratch");

  if (!resuming) {
    std::string err;  // rank 0 prepares the directory; every rank learns whether it could
    try {
      if (rank0) {
        prepare_out_dir(out, a.overwrite);
        json run = {{"version", 1},
                    {"config", json::parse(train_config_to_json(cfg))},
                    {"data", data.to_json()},
                    {"metadata", meta},
                    {"checkpoint_every_tokens", a.checkpoint_every},
                    {"init", a.init}};
        write_file_atomic(out / "run.json", run.dump(2) + "\n");
      }
    } catch (const std::exception& e) {
      if (!comm) throw;
      err = e.what();
    }
    if (comm) dist::all_ok(*comm, err, "preparing --out");
  }

  SaeDirExtras extras;
  extras.metadata_json = meta;
  TrainerOptions opts;
  opts.extras = extras;
  opts.device = device;
  opts.precision = device == Device::cuda ? precision : cuda::Precision::fp32;
  opts.should_stop = [] { return g_interrupted.load(); };
  if (comm) {
    opts.comm = comm;
    // Every rank must stop at the same step: Ctrl-C on any rank stops them all.
    opts.should_stop = [comm] {
      double stop = g_interrupted.load() ? 1 : 0;
      comm->all_reduce_sum(&stop, 1);
      return stop > 0;
    };
  }

  const fs::path log_path = a.metrics_log.empty() ? out / "metrics.jsonl" : fs::path(a.metrics_log);
  std::optional<MetricsLog> log;
  ProgressPrinter progress(std::cout, stdout_is_tty(), a.progress_every);
  StepMetrics last{};
  bool have_last = false;
  opts.on_step = [&](const StepMetrics& m) {
    if (!rank0) return;  // the metrics are global: rank 0 logs them
    last = m;
    have_last = true;
    log->write(m.step, m.named());
    log->flush();
    ProgressSample p{.step = m.step + 1, .total_steps = cfg.steps_to_run(), .tokens = m.n_training_samples,
                     .loss = m.overall_loss, .l0 = m.l0, .explained_variance = m.explained_variance,
                     .dead = m.dead_features, .d_sae = cfg.d_sae};
    progress.update(p);
  };

  Trainer trainer(cfg, *src, opts);
  if (resuming) {
    trainer.resume(checkpoint);
    std::cout << "resuming " << out.string() << " at step " << trainer.state().step << " of "
              << cfg.total_training_steps() << "\n";
  } else if (init) {
    // Start from the given weights: write them as the step-0 checkpoint and resume from it.
    TrainState st = TrainState::initial(cfg);
    SaeParams p = init->params;
    if (cfg.normalize_activations == Normalize::expected_average_only_in) {
      // The given weights work on raw inputs; training runs on s*x. Estimate s as the trainer
      // would (same batches consumed) and unfold it: W_enc /= s, W_dec *= s, b_dec *= s.
      double s = cpu::estimate_scaling_factor(*src, cfg.d_in, cfg.batch_size, cfg.n_batches_for_norm_estimate);
      cpu::fold_scaling_factor(&p, 1.0 / s);
      st.scaling_factor = s;
    }
    st.params = from_sae_params(p);
    st.data_position = src->position();
    save_checkpoint(checkpoint, cfg, st, extras);
    trainer.resume(checkpoint);
    std::cout << "starting from the weights of " << a.init << "\n";
  }
  if (rank0) log.emplace(log_path, resuming ? trainer.state().step : 0);

  std::cout << "training a TopK SAE (d_in " << cfg.d_in << ", d_sae " << cfg.d_sae << ", k " << cfg.k << ") on "
            << src->describe() << "; " << cfg.total_training_steps() << " steps of " << cfg.batch_size
            << " tokens, device " << device_name(device)
            << (device == Device::cuda ? " (" + a.precision + ")" : std::string()) << "\n";

  const int64_t ckpt_steps =
      a.checkpoint_every > 0 ? std::max<int64_t>(1, (a.checkpoint_every + cfg.batch_size - 1) / cfg.batch_size) : 0;
  int64_t last_ckpt_step = has_checkpoint(checkpoint) ? trainer.state().step : -1;
  auto save_ckpt = [&]() -> bool {
    try {
      trainer.save_checkpoint(checkpoint);
      last_ckpt_step = trainer.state().step;
      return true;
    } catch (const std::exception& e) {
      progress.finish();
      std::cerr << "warning: writing the checkpoint failed: " << e.what() << "\n"
                << (last_ckpt_step >= 0 ? concat("the previous checkpoint (step ", last_ckpt_step, ") in ",
                                                 checkpoint.string(), " is kept")
                                        : std::string("there is no earlier checkpoint"))
                << "\n";
      return false;
    }
  };

  progress.begin(trainer.state().n_training_samples);
  g_interrupted = false;
  auto old_handler = std::signal(SIGINT, on_sigint);
  bool dry = false;
  // run() goes on until the next checkpoint is due (or the end, Ctrl-C, or --stop-after-steps):
  // on cuda each return waits for the GPU and copies the state back, so it returns no more often
  // than it must.
  while (!trainer.done()) {
    const int64_t at = trainer.state().step;
    int64_t want = ckpt_steps > 0 ? ckpt_steps - at % ckpt_steps : -1;
    if (a.stop_after_steps >= 0) {
      const int64_t left = std::max<int64_t>(1, a.stop_after_steps - at);  // at least one step, as before
      want = want < 0 ? left : std::min(want, left);
    }
    trainer.run(want);
    if (log) log->flush();
    const int64_t step = trainer.state().step;
    if (a.stop_after_steps >= 0 && step >= a.stop_after_steps) g_interrupted = true;  // tests: a deterministic Ctrl-C
    if (g_interrupted) {
      progress.finish();
      std::signal(SIGINT, old_handler);
      std::cerr << "interrupted at step " << step << "; writing a checkpoint\n";
      if (!save_ckpt()) throw Error("interrupted, and the checkpoint could not be written (see above)");
      std::cerr << "checkpoint written to " << checkpoint.string() << "; continue with: topksae train --resume "
                << out.string() << "\n";
      // Exit status 130 (as a shell reports SIGINT) after unwinding, so the prefetch thread is
      // joined and every file closed: main() returns a CLI::RuntimeError's code silently.
      throw CLI::RuntimeError(130);
    }
    if (trainer.exhausted()) {
      dry = true;
      break;
    }
    if (ckpt_steps > 0 && step % ckpt_steps == 0 && !trainer.done()) save_ckpt();
  }
  std::signal(SIGINT, old_handler);
  progress.finish();
  if (dry)
    std::cout << "the data ran out after " << trainer.state().step << " of " << cfg.total_training_steps()
              << " steps (pass --loop-data to make several passes over it)\n";
  if (files && files->skipped()) std::cout << "skipped " << files->skipped() << " rows holding NaN or Inf\n";
  if (comm) std::cout << "latent-sharded over " << comm->size() << " ranks\n";

  if (ckpt_steps > 0 && last_ckpt_step != trainer.state().step) save_ckpt();  // so --resume can extend the run
  trainer.save_final(out);
  std::cout << "saved the SAE to " << out.string() << " (step " << trainer.state().step << ", "
            << trainer.state().n_training_samples << " tokens)\n";
  if (have_last)
    std::cout << "final step: loss " << last.overall_loss << ", mse " << last.mse_loss << ", L0 " << last.l0
              << ", explained variance " << last.explained_variance << ", dead latents " << last.dead_features << "/"
              << cfg.d_sae << "\n";

  if (!rank0) return;  // below: rank 0's report
  // A sharded run's state here is rank 0's shard: the report reads the saved sparsity back (and
  // the saved SAE for the synthetic feature recovery).
  std::optional<Sae> saved_sae;
  std::vector<float> saved_sparsity;
  if (comm) {
    saved_sparsity = SafetensorsFile::open(out / kSaeSparsityFile).read_f32("sparsity");
    if (syn) saved_sae = load_sae_dir(out);
  }

  ReportContent rc;
  rc.title = "topksae training report: " + out.filename().string();
  rc.summary = {{"output", out.string()},
                {"data", src->describe()},
                {"d_in / d_sae / k", concat(cfg.d_in, " / ", cfg.d_sae, " / ", cfg.k)},
                {"steps", concat(trainer.state().step, " of ", cfg.total_training_steps(), " (batch ", cfg.batch_size, ")")},
                {"tokens", std::to_string(trainer.state().n_training_samples)},
                {"device", device == Device::cuda ? "cuda (" + a.precision + ")" : std::string("cpu")},
                {"lr", concat(cfg.lr, " (", lr_scheduler_name(cfg.lr_scheduler_name), ")")},
                {"normalize_activations", std::string(normalize_name(cfg.normalize_activations))}};
  if (trainer.state().scaling_factor) rc.summary.emplace_back("scaling factor (folded)", concat(*trainer.state().scaling_factor));
  if (have_last) {
    rc.summary.emplace_back("final loss", concat(last.overall_loss));
    rc.summary.emplace_back("final explained variance", concat(last.explained_variance));
    rc.summary.emplace_back("final L0", concat(last.l0));
    rc.summary.emplace_back("dead latents", concat(last.dead_features, " / ", cfg.d_sae));
  }
  if (comm) rc.density = density_histogram(saved_sparsity);
  else if (!comm && trainer.state().stats.n_frac_active > 0)
    rc.density = density_histogram(log_feature_sparsity(trainer.state().stats));
  if (syn) {
    Sae fin = comm ? *saved_sae : final_sae(cfg, trainer.state());
    RecoveryReport r = feature_recovery(syn->dictionary(), syn->config().n_features, fin.params.W_dec, cfg.d_sae, cfg.d_in);
    std::cout << r.summary() << "\n";
    rc.recovery = ReportContent::Recovery{r.summary(), r.best_cos, r.best_latent, syn->frequencies()};
    rc.summary.emplace_back("feature recovery", r.summary());
  }
  log.reset();  // flush and close before reading it back
  if (!a.no_report) {
    rc.history = read_metrics_log(log_path);
    fs::path report = a.report.empty() ? out / "report.html" : fs::path(a.report);
    write_html_report(report, rc);
    std::cout << "report: " << report.string() << "\n";
  }
}

// Launched by mpirun / srun with several ranks: latent-sharded (a build without MPI stops here).
// An error on one rank (not a collective stop such as Ctrl-C) aborts the whole job with its
// message, instead of leaving the other ranks waiting in their next collective.
void run_train(TrainArgs& a) {
  if (!dist::launched_with_several_ranks()) return run_train(a, nullptr);
  std::shared_ptr<dist::Collectives> comm = dist::make_mpi_collectives();
  try {
    run_train(a, comm);
  } catch (const CLI::RuntimeError&) {
    throw;  // every rank stopped together (exit status 130 after Ctrl-C)
  } catch (const std::exception& e) {
    std::cerr << "error (rank " << comm->rank() << " of " << comm->size() << "): " << e.what() << std::endl;
    comm->abort(1);
  }
}

// Registers a training flag bound to a TrainConfig field: applied after the config file, and only
// when given on the command line.
template <typename T, typename Set>
CLI::Option* train_flag(TrainArgs* a, const char* name, const char* help, Set set) {
  auto v = std::make_shared<T>();
  CLI::Option* o = a->cmd->add_option(name, *v, help);
  a->run_defining.push_back(o);
  a->set_flags.push_back([o, v, set](TrainConfig& c) {
    if (o->count()) set(c, *v);
  });
  return o;
}

CommandRegistration reg([](CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train a TopK SAE on activation files (--data) or synthetic data (--synthetic)");
  auto a = std::make_shared<TrainArgs>();
  a->cmd = cmd;
  auto* A = a.get();
  // ---- data
  cmd->add_option("--data", A->data.path, "activations: a .npy / .safetensors / .arrow file or a directory of them");
  cmd->add_flag("--synthetic", A->synthetic, "train on synthetic data with a planted dictionary (the default without --data)");
  cmd->add_option("--tensor", A->data.tensor, "the safetensors tensor / Arrow column, if a shard holds several");
  cmd->add_option("--shuffle", A->data.shuffle, "buffer (sae_lens mixing buffer) or none")
      ->check(CLI::IsMember({"buffer", "none"}))
      ->capture_default_str();
  cmd->add_option("--buffer-batches", A->data.buffer_batches, "mixing-buffer size in batches")->capture_default_str();
  cmd->add_flag("--skip-nonfinite", A->data.skip_nonfinite, "skip (and count) rows holding NaN or Inf instead of failing");
  cmd->add_flag("--loop-data", A->data.loop, "start the data again when it runs out (several epochs)");
  cmd->add_option("--synthetic-features", A->synthetic_features, "planted features (--synthetic)")->capture_default_str();
  cmd->add_option("--synthetic-seed", A->synthetic_seed, "seed of the synthetic data")->capture_default_str();
  // ---- the SAE and the optimisation (sae_lens names)
  train_flag<int64_t>(A, "--d-in", "input width (synthetic data; taken from the files otherwise)",
                      [](TrainConfig& c, int64_t v) { c.d_in = v; });
  train_flag<int64_t>(A, "--d-sae", "number of latents (default with --data: 16 * d_in)",
                      [](TrainConfig& c, int64_t v) { c.d_sae = v; });
  train_flag<int64_t>(A, "--k", "latents kept per token (default 100)", [](TrainConfig& c, int64_t v) { c.k = v; });
  train_flag<double>(A, "--lr", "learning rate (default 3e-4)", [](TrainConfig& c, double v) { c.lr = v; });
  train_flag<double>(A, "--adam-beta1", "Adam beta1 (default 0.9)", [](TrainConfig& c, double v) { c.adam_beta1 = v; });
  train_flag<double>(A, "--adam-beta2", "Adam beta2 (default 0.999)", [](TrainConfig& c, double v) { c.adam_beta2 = v; });
  train_flag<std::string>(A, "--lr-scheduler-name", "constant, cosineannealing or cosineannealingwarmrestarts",
                          [](TrainConfig& c, const std::string& v) { c.lr_scheduler_name = lr_scheduler_from_name(v); });
  train_flag<int64_t>(A, "--lr-warm-up-steps", "linear warm-up steps (default 0)",
                      [](TrainConfig& c, int64_t v) { c.lr_warm_up_steps = v; });
  train_flag<int64_t>(A, "--lr-decay-steps", "linear decay steps at the end (default 0)",
                      [](TrainConfig& c, int64_t v) { c.lr_decay_steps = v; });
  train_flag<double>(A, "--lr-end", "final learning rate (default lr / 10)", [](TrainConfig& c, double v) { c.lr_end = v; });
  train_flag<int64_t>(A, "--n-restart-cycles", "cycles of cosineannealingwarmrestarts (default 1)",
                      [](TrainConfig& c, int64_t v) { c.n_restart_cycles = v; });
  train_flag<int64_t>(A, "--dead-feature-window", "steps without firing before a latent counts as dead (default 1000)",
                      [](TrainConfig& c, int64_t v) { c.dead_feature_window = v; });
  train_flag<int64_t>(A, "--feature-sampling-window", "steps per feature-density window (default 2000)",
                      [](TrainConfig& c, int64_t v) { c.feature_sampling_window = v; });
  train_flag<double>(A, "--aux-loss-coefficient", "AuxK loss weight (default 1.0)",
                     [](TrainConfig& c, double v) { c.aux_loss_coefficient = v; });
  train_flag<std::string>(A, "--decoder-init-norm", "norm of the initial decoder rows, or none (default 0.1)",
                          [](TrainConfig& c, const std::string& v) {
                            if (v == "none" || v == "null") c.decoder_init_norm.reset();
                            else {
                              try {
                                c.decoder_init_norm = std::stod(v);
                              } catch (const std::exception&) {
                                TOPKSAE_FAIL("--decoder-init-norm must be a number or none, got '", v, "'");
                              }
                            }
                          });
  train_flag<std::string>(A, "--normalize-activations", "none or expected_average_only_in (default none)",
                          [](TrainConfig& c, const std::string& v) { c.normalize_activations = normalize_from_name(v); });
  train_flag<int64_t>(A, "--n-batches-for-norm-estimate", "batches read to estimate the scaling factor (default 1000)",
                      [](TrainConfig& c, int64_t v) { c.n_batches_for_norm_estimate = v; });
  train_flag<bool>(A, "--apply-b-dec-to-input", "subtract b_dec from the input (default true)",
                   [](TrainConfig& c, bool v) { c.apply_b_dec_to_input = v; });
  train_flag<int64_t>(A, "--batch-size", "tokens per step (sae_lens train_batch_size_tokens; default 4096)",
                      [](TrainConfig& c, int64_t v) { c.batch_size = v; });
  train_flag<int64_t>(A, "--training-tokens", "tokens to train on (default 2000000)",
                      [](TrainConfig& c, int64_t v) { c.training_tokens = v; });
  train_flag<uint64_t>(A, "--seed", "initialisation and shuffling seed (default 42)",
                       [](TrainConfig& c, uint64_t v) { c.seed = v; });
  cmd->add_option("--config", A->config_file, "JSON file of training config keys (sae_lens names); flags override it");
  for (const char* n : {"--data", "--synthetic", "--tensor", "--shuffle", "--buffer-batches", "--skip-nonfinite",
                        "--loop-data", "--synthetic-features", "--synthetic-seed", "--config"})
    A->run_defining.push_back(cmd->get_option(n));
  // ---- metadata written into cfg.json
  cmd->add_option("--model-name", A->model_name, "cfg.json metadata: the model the activations come from");
  cmd->add_option("--hook-name", A->hook_name, "cfg.json metadata: the hook point");
  cmd->add_option("--dataset-path", A->dataset_path, "cfg.json metadata: the dataset (default: --data)");
  // ---- run control and output
  cmd->add_option("--init", A->init, "start from the weights of this SAE directory");
  cmd->add_option("--out", A->out, "output directory (the sae_lens SAE directory, plus checkpoint/, logs, report)");
  cmd->add_flag("--overwrite", A->overwrite, "replace --out if it exists");
  cmd->add_option("--checkpoint-every", A->checkpoint_every, "write a resumable checkpoint every N tokens (0: only on Ctrl-C)")
      ->capture_default_str();
  cmd->add_option("--resume", A->resume, "continue the run in this output directory from its checkpoint");
  add_device_option(cmd, &A->device);
  cmd->add_option("--precision", A->precision,
                  "GPU encoder GEMM: fp32 (matches the CPU and sae_lens), tf32 or bf16 (faster, looser); "
                  "the CPU always runs fp32")
      ->check(CLI::IsMember({"fp32", "tf32", "bf16"}))
      ->capture_default_str();
  cmd->add_option("--metrics-log", A->metrics_log, "JSONL metrics log (default OUT/metrics.jsonl)");
  cmd->add_option("--report", A->report, "HTML report (default OUT/report.html)");
  cmd->add_flag("--no-report", A->no_report, "do not write the HTML report");
  cmd->add_option("--progress-every", A->progress_every, "seconds between progress lines when stdout is not a terminal")
      ->capture_default_str();
  cmd->add_option("--stop-after-steps", A->stop_after_steps, "act as if Ctrl-C came after this many steps (for tests)")
      ->group("");
  for (const char* n : {"--init", "--model-name", "--hook-name", "--dataset-path"})
    A->run_defining.push_back(cmd->get_option(n));
  cmd->callback([a] { run_train(*a); });
});
}  // namespace
}  // namespace topksae::cli
