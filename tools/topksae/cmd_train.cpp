// `topksae train`: train a TopK SAE on activation files (--data) or on synthetic data with a
// planted dictionary (--synthetic, the default without --data), writing a sae_lens SAE directory.
// This file holds the flags and the flow; the output directory (run.json, its data stream, the
// report) is src/train/run_dir.h, the training config's flags come from its field table
// (train_config_fields()), and the Trainer owns the checkpoints' timing.
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
#include "dist/device_collectives.h"
#include "dist/sharded_files.h"
#include "topksae/atomic_file.h"
#include "topksae/error.h"
#include "topksae/precision.h"
#include "topksae/report.h"
#include "topksae/safetensors.h"
#include "topksae/sae_dir.h"
#include "topksae/train.h"
#include "train/run_dir.h"

namespace topksae::cli {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

struct TrainArgs {
  std::vector<std::function<void(TrainConfig&)>> set_flags;  // one per training flag, applied if given
  std::vector<CLI::Option*> run_defining;  // options fixed by run.json once a run exists
  CLI::App* cmd = nullptr;
  std::string config_file, init, out, resume, device = "auto", precision = "fp32", metrics_log, report;
  std::string model_name, hook_name, dataset_path;
  int64_t checkpoint_every = 0, stop_after_steps = -1, synthetic_features = 256;
  uint64_t synthetic_seed = 1;
  double progress_every = 10;
  double collective_timeout = -1;  // sharded runs: < 0 = TOPKSAE_COLLECTIVE_TIMEOUT or the default
  bool overwrite = false, synthetic = false, no_report = false;
  run_dir::DataSpec data;
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

// Ctrl-C: the first sets the flag (a checkpoint is written after the current step); a second one
// kills the process the usual way. Sharded runs take SIGTERM and SIGUSR1 the same way: a Ctrl-C
// reaches only mpirun (OpenMPI puts each rank in its own process group), which sends the ranks
// SIGTERM and, odls_base_sigkill_timeout seconds later (default 1), SIGKILL; Slurm's scancel sends
// SIGTERM too; mpirun forwards SIGUSR1 to the ranks without ending the job (docs/scaling.md, Faults).
std::atomic<bool> g_interrupted{false};
std::atomic<int> g_signal{0};  // the signal that set g_interrupted (0: --stop-after-steps)
extern "C" void on_sigint(int sig) {
  g_signal = sig;
  g_interrupted = true;
  std::signal(sig, SIG_DFL);
}

// "12% of 5m03s of training" (+ ": input-bound" when the device mostly waited).
std::string input_wait_summary(const Trainer::InputWait& w) {
  return concat(int(w.fraction() * 100 + 0.5), "% of ", format_duration(w.total_s), " of training",
                w.fraction() > 0.5 ? ": input-bound, the data did not keep up" : "");
}

// Says once, in plain words, that a run is mostly waiting for its data: after 20 steps and 5 s
// (so a slow first batch from a cold disk alone does not trigger it) with the device idle more
// than half of the time.
struct InputWaitNotice {
  bool said = false;
  int64_t steps = 0;
  std::string check(const Trainer::InputWait& w, Device device, const std::string& data) {
    if (said || ++steps < 20 || w.total_s < 5 || w.fraction() <= 0.5) return "";
    said = true;
    return concat("note: the ", device == Device::cuda ? "GPU" : "CPU", " has waited for data ",
                  int(w.fraction() * 100 + 0.5), "% of the time so far: this run is input-bound, reading ", data,
                  " is slower than training on it. Faster storage, data that fits in the page cache (RAM), or more "
                  "CPU cores for the gather threads would help; bench/bench_data measures the data path alone.\n");
  }
};

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
  run_dir::DataSpec data = a.data;
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
    const run_dir::RunFile run = run_dir::read_run_file(r);
    TOPKSAE_CHECK(!run.data.live, "--resume ", a.resume, ": the run was trained on a live stream (topksae.Trainer), which "
                  "cannot be re-read; continue it with topksae.Trainer.resume('", r.string(), "')");
    cfg = run.config;
    data = run.data;
    meta = run.metadata;
    if (a.cmd->count("--training-tokens")) {
      TrainConfig only_tokens;
      for (auto& f : a.set_flags) f(only_tokens);
      cfg.training_tokens = only_tokens.training_tokens;
    }
    if (a.checkpoint_every == 0) a.checkpoint_every = run.checkpoint_every_tokens;
  } else {
    TOPKSAE_CHECK(!a.out.empty(), "--out DIR is required (where the SAE directory goes)");
    out = a.out;
    // (Sharded: rank 0 alone, in run_dir::prepare below; the others would race with its mkdir.)
    TOPKSAE_CHECK(comm || a.overwrite || !fs::exists(out), "--out ", out.string(), " exists; pass --overwrite to replace it, or --resume ",
                  out.string(), " to continue its run");
    checkpoint = out / "checkpoint";
    if (data.path.empty()) synthetic_preset(cfg);
    TOPKSAE_CHECK(!(a.synthetic && !data.path.empty()), "--synthetic and --data exclude each other");
    if (!a.config_file.empty()) cfg = run_dir::apply_config_json(cfg, read_small_file(a.config_file), a.config_file, &meta);
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
  const cuda::Precision precision = cuda::precision_from_name(a.precision);
  // Sharded on cuda: one GPU per rank, NCCL bootstrapped over MPI (a build without NCCL, or fewer
  // GPUs than ranks on a node, stops here with the reason). Made before anything touches a GPU, so
  // every allocation lands on this rank's device.
  std::shared_ptr<dist::DeviceCollectives> device_comm;
  if (comm && device == Device::cuda) {
    TOPKSAE_CHECK(precision != cuda::Precision::bf16, "latent-sharded training on cuda runs in fp32 or tf32 for "
                  "now (docs/scaling.md): pass --precision fp32 or tf32");
    device_comm = dist::make_nccl_collectives(comm);
  }

  run_dir::Source source = run_dir::open_source(data, cfg);
  ActivationSource& src = *source.stream;
  if (!data.path.empty()) {
    TOPKSAE_CHECK(cfg.d_in == 0 || cfg.d_in == src.d_in() || resuming, "--d-in ", cfg.d_in, " disagrees with the data (",
                  src.describe(), ")");
    cfg.d_in = src.d_in();
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
        run_dir::prepare(out, a.overwrite);
        run_dir::write_run_file(out, {cfg, data, meta, a.checkpoint_every, a.init});
      }
    } catch (const std::exception& e) {
      if (!comm) throw;
      err = e.what();
    }
    if (comm) dist::all_ok(*comm, err, "preparing --out");
  }

  const fs::path log_path = a.metrics_log.empty() ? out / "metrics.jsonl" : fs::path(a.metrics_log);
  std::optional<MetricsLog> log;
  ProgressPrinter progress(std::cout, stdout_is_tty(), a.progress_every);
  std::optional<StepMetrics> last;

  TrainerOptions opts;
  opts.extras.metadata_json = meta;
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
    opts.device_comm = device_comm;
  }
  // --checkpoint-every counts tokens; the Trainer checkpoints every that many steps (rounded up),
  // at the end of the run, and when asked (Ctrl-C below).
  opts.checkpoint_dir = checkpoint;
  opts.checkpoint_every =
      a.checkpoint_every > 0 ? std::max<int64_t>(1, (a.checkpoint_every + cfg.batch_size - 1) / cfg.batch_size) : 0;
  opts.on_checkpoint_error = [&](const std::string& error, int64_t kept_step) {
    progress.finish();
    std::cerr << "warning: writing the checkpoint failed: " << error << "\n"
              << (kept_step >= 0 ? concat("the previous checkpoint (step ", kept_step, ") in ", checkpoint.string(),
                                          " is kept")
                                 : std::string("there is no earlier checkpoint"))
              << "\n";
  };
  Trainer* trainer_ptr = nullptr;  // set below; on_step reads the input-wait share from it
  InputWaitNotice wait_notice;
  opts.on_step = [&](const StepMetrics& m) {
    if (!rank0) return;  // the metrics are global: rank 0 logs them
    last = m;
    const Trainer::InputWait wait = trainer_ptr->input_wait();
    auto values = m.named();
    values.emplace_back("perf/data_wait_fraction", wait.fraction());  // share of the run so far
    log->write(m.step, values);
    log->flush();
    ProgressSample p{.step = m.step + 1, .total_steps = cfg.steps_to_run(), .tokens = m.n_training_samples,
                     .loss = m.overall_loss, .l0 = m.l0, .explained_variance = m.explained_variance,
                     .dead = m.dead_features, .d_sae = cfg.d_sae, .data_wait = wait.fraction()};
    progress.update(p);
    if (const std::string note = wait_notice.check(wait, device, src.describe()); !note.empty()) {
      progress.finish();
      std::cout << note << std::flush;
    }
  };

  Trainer trainer(cfg, src, opts);
  trainer_ptr = &trainer;
  if (resuming) {
    trainer.resume(checkpoint);
    std::cout << "resuming " << out.string() << " at step " << trainer.state().step << " of "
              << cfg.total_training_steps() << "\n";
  } else if (init) {
    trainer.start_from_sae(*init);
    std::cout << "starting from the weights of " << a.init << "\n";
  }
  if (rank0) log.emplace(log_path, resuming ? trainer.state().step : 0);

  std::cout << "training a TopK SAE (d_in " << cfg.d_in << ", d_sae " << cfg.d_sae << ", k " << cfg.k << ") on "
            << src.describe() << "; " << cfg.total_training_steps() << " steps of " << cfg.batch_size
            << " tokens, device " << device_name(device)
            << (device == Device::cuda ? " (" + a.precision + ")" : std::string()) << "\n";

  progress.begin(trainer.state().n_training_samples);
  g_interrupted = false;
  g_signal = 0;
  auto old_handler = std::signal(SIGINT, on_sigint);
  auto old_term = comm ? std::signal(SIGTERM, on_sigint) : SIG_ERR;
  auto old_usr1 = comm ? std::signal(SIGUSR1, on_sigint) : SIG_ERR;
  auto restore_signals = [&] {
    std::signal(SIGINT, old_handler);
    if (comm) {
      std::signal(SIGTERM, old_term);
      std::signal(SIGUSR1, old_usr1);
    }
  };
  bool dry = false;
  while (!trainer.done()) {
    // --stop-after-steps (tests): a deterministic Ctrl-C after that step (at least one step runs).
    const int64_t want = a.stop_after_steps >= 0 ? std::max<int64_t>(1, a.stop_after_steps - trainer.state().step) : -1;
    trainer.run(want);
    if (log) log->flush();
    const int64_t step = trainer.state().step;
    if (a.stop_after_steps >= 0 && step >= a.stop_after_steps) g_interrupted = true;
    bool stop = g_interrupted, launcher_ending = false;
    if (comm) {  // the ranks agree (a signal may have reached one after the last should_stop)
      const int sig = g_signal;
      double any[2] = {stop ? 1. : 0., sig == SIGTERM || sig == SIGINT ? 1. : 0.};
      comm->all_reduce_sum(any, 2);
      stop = any[0] > 0;
      launcher_ending = any[1] > 0;
    }
    if (stop) {
      progress.finish();
      restore_signals();
      if (rank0) std::cerr << "interrupted at step " << step << "; writing a checkpoint\n";
      // (The Trainer may have just written this step's checkpoint itself.)
      if (trainer.last_checkpoint_step() != step && !trainer.checkpoint())
        throw Error("interrupted, and the checkpoint could not be written (see above)");
      if (rank0)
        std::cerr << "checkpoint written to " << checkpoint.string() << "; continue with: "
                  << (comm ? concat("mpirun -np ", comm->size(), " ") : std::string()) << "topksae train --resume "
                  << out.string() << "\n";
      // SIGTERM from mpirun: it is ending the job and would leave MPI_Finalize waiting until its
      // SIGKILL; the checkpoint set is complete and the log flushed, so leave now.
      if (launcher_ending) {
        std::cout.flush();
        std::cerr.flush();
        std::_Exit(130);
      }
      // Exit status 130 (as a shell reports SIGINT) after unwinding, so the prefetch thread is
      // joined and every file closed: main() returns a CLI::RuntimeError's code silently.
      throw CLI::RuntimeError(130);
    }
    if (trainer.exhausted()) {
      dry = true;
      break;
    }
  }
  restore_signals();
  progress.finish();
  if (dry)
    std::cout << "the data ran out after " << trainer.state().step << " of " << cfg.total_training_steps()
              << " steps (pass --loop-data to make several passes over it)\n";
  if (source.files && source.files->skipped())
    std::cout << "skipped " << source.files->skipped() << " rows holding NaN or Inf\n";
  if (comm) std::cout << "latent-sharded over " << comm->size() << " ranks\n";

  trainer.save_final(out);
  std::cout << "saved the SAE to " << out.string() << " (step " << trainer.state().step << ", "
            << trainer.state().n_training_samples << " tokens)\n";
  if (last)
    std::cout << "final step: loss " << last->overall_loss << ", mse " << last->mse_loss << ", L0 " << last->l0
              << ", explained variance " << last->explained_variance << ", dead latents " << last->dead_features << "/"
              << cfg.d_sae << "\n";

  if (!rank0) return;  // below: rank 0's report
  // A sharded run's state here is rank 0's shard: its density and the synthetic feature recovery
  // come from the SAE directory rank 0 just wrote, not from the state.
  ReportContent rc = run_dir::report_content(
      out, src.describe(), device == Device::cuda ? "cuda (" + a.precision + ")" : std::string("cpu"), cfg,
      trainer.state(), last, comm ? nullptr : source.synthetic);
  if (comm) {
    rc.density = density_histogram(SafetensorsFile::open(out / kSaeSparsityFile).read_f32("sparsity"));
    if (source.synthetic) {
      const Sae fin = load_sae_dir(out);
      const SyntheticSource* syn = source.synthetic;
      RecoveryReport r = feature_recovery(syn->dictionary(), syn->config().n_features, fin.params.W_dec, cfg.d_sae, cfg.d_in);
      rc.recovery = ReportContent::Recovery{r.summary(), r.best_cos, r.best_latent, syn->frequencies()};
      rc.summary.emplace_back("feature recovery", r.summary());
    }
  }
  if (rc.recovery) std::cout << rc.recovery->summary << "\n";
  if (const Trainer::InputWait w = trainer.input_wait(); w.total_s > 0)
    rc.summary.emplace_back("time the device waited for data", input_wait_summary(w));
  log.reset();  // flush and close before reading it back
  if (!a.no_report) {
    rc.history = read_metrics_log(log_path);
    fs::path report = a.report.empty() ? out / "report.html" : fs::path(a.report);
    write_html_report(report, rc);
    std::cout << "report: " << report.string() << "\n";
  }
}

// The training config's flags, one per row of its field table (train_config_fields()): each is
// applied after the config file, and only when given on the command line.
void add_config_flags(TrainArgs* a) {
  const TrainConfig defaults;
  for (const TrainConfigField& f : train_config_fields()) {
    std::string help(f.help);
    if (help.find("default") == std::string::npos) {
      std::string d = train_config_get(defaults, f.key);  // JSON: a name comes quoted
      if (d.size() >= 2 && d.front() == '"') d = d.substr(1, d.size() - 2);
      help += " (default " + d + ")";
    }
    auto v = std::make_shared<std::string>();
    CLI::Option* o = a->cmd->add_option(std::string(f.flag), *v, help);
    a->run_defining.push_back(o);
    a->set_flags.push_back([o, v, f](TrainConfig& c) {
      if (!o->count()) return;
      try {
        train_config_set_text(c, f.key, *v);
      } catch (const Error& e) {
        TOPKSAE_FAIL(f.flag, ": ", e.what());
      }
    });
  }
}

// Launched by mpirun / srun with several ranks: latent-sharded (a build without MPI stops here).
// An error on one rank (not a collective stop such as Ctrl-C) aborts the whole job with its
// message, instead of leaving the other ranks waiting in their next collective.
void run_train(TrainArgs& a) {
  TOPKSAE_CHECK(a.cmd->count("--collective-timeout") == 0 || a.collective_timeout >= 0,
                "--collective-timeout ", a.collective_timeout, ": expected seconds >= 0 (0: no timeout)");
  if (!dist::launched_with_several_ranks()) return run_train(a, nullptr);
  std::shared_ptr<dist::Collectives> comm = dist::make_mpi_collectives(a.collective_timeout);
  try {
    run_train(a, comm);
  } catch (const CLI::RuntimeError&) {
    throw;  // every rank stopped together (exit status 130 after Ctrl-C)
  } catch (const std::exception& e) {
    std::cerr << "error (rank " << comm->rank() << " of " << comm->size() << "): " << e.what() << std::endl;
    comm->abort(1);
  }
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
  add_config_flags(A);
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
  add_precision_option(cmd, &A->precision);
  cmd->add_option("--metrics-log", A->metrics_log, "JSONL metrics log (default OUT/metrics.jsonl)");
  cmd->add_option("--report", A->report, "HTML report (default OUT/report.html)");
  cmd->add_flag("--no-report", A->no_report, "do not write the HTML report");
  cmd->add_option("--progress-every", A->progress_every, "seconds between progress lines when stdout is not a terminal")
      ->capture_default_str();
  cmd->add_option("--collective-timeout", A->collective_timeout,
                  "sharded runs (mpirun): end the job when one MPI collective waits longer than this many seconds "
                  "(a stalled rank; 0: never; default TOPKSAE_COLLECTIVE_TIMEOUT or 600, docs/scaling.md)");
  cmd->add_option("--stop-after-steps", A->stop_after_steps, "act as if Ctrl-C came after this many steps (for tests)")
      ->group("");
  for (const char* n : {"--init", "--model-name", "--hook-name", "--dataset-path"})
    A->run_defining.push_back(cmd->get_option(n));
  cmd->callback([a] { run_train(*a); });
});
}  // namespace
}  // namespace topksae::cli
