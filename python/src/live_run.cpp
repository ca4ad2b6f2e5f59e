// The live training run behind topksae.Trainer (python/src/live_run.h).
#include "live_run.h"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>

#include "topksae/api.h"  // InvalidArgument: the binding maps it to ValueError
#include "topksae/atomic_file.h"
#include "topksae/error.h"
#include "topksae/metrics.h"
#include "topksae/sae_dir.h"
#include "train/run_dir.h"

namespace topksae::py {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

TrainConfig config_from_json(const std::string& text, std::map<std::string, std::string>* meta) {
  try {
    // Missing keys keep TrainConfig's defaults; the runner keys (model_name, ...) go to *meta, as
    // `topksae train --config` reads them (run_dir.h).
    TrainConfig c = run_dir::apply_config_json(TrainConfig{}, text, "Trainer config", meta);
    TOPKSAE_CHECK(c.k <= c.d_sae, "k (", c.k, ") must not exceed d_sae (", c.d_sae, ")");
    c.validate();
    // A runner key given as None is no metadata (cfg.json then has no such key).
    std::erase_if(*meta, [](const auto& kv) { return kv.second == "null"; });
    return c;
  } catch (const Error& e) {
    throw InvalidArgument(e.what());
  }
}

// As `topksae train` (run_dir::prepare), with the Python spelling of "--overwrite".
void prepare_out_dir(const fs::path& out, bool overwrite) {
  if (!overwrite && fs::exists(out))
    throw InvalidArgument(concat("out ", out.string(), " exists; pass overwrite=True to replace it, or "
                                 "topksae.Trainer.resume('", out.string(), "') to continue its run"));
  run_dir::prepare(out, true);
}

cuda::Precision precision_of(const std::string& p) {
  if (p == "fp32") return cuda::Precision::fp32;
  if (p == "tf32") return cuda::Precision::tf32;
  if (p == "bf16") return cuda::Precision::bf16;
  throw InvalidArgument(concat("precision must be fp32, tf32 or bf16, got '", p, "'"));
}

}  // namespace

LiveRun::LiveRun(LiveRunOptions o) : opts_(std::move(o)) {
  if (opts_.shuffle != "buffer" && opts_.shuffle != "none")
    throw InvalidArgument(concat("shuffle must be 'buffer' or 'none', got '", opts_.shuffle, "'"));
  const cuda::Precision precision = precision_of(opts_.precision);
  if (opts_.device == Device::cpu && precision != cuda::Precision::fp32)
    throw InvalidArgument(concat("precision ", opts_.precision, " applies to the GPU's encoder GEMM; device 'cpu' "
                                 "computes in fp32"));
  if (opts_.checkpoint_every_tokens < 0)
    throw InvalidArgument(concat("checkpoint_every must be >= 0 tokens, got ", opts_.checkpoint_every_tokens));
  out_ = opts_.out;
  checkpoint_ = out_ / "checkpoint";
  if (opts_.resume) {
    TOPKSAE_CHECK(fs::exists(out_ / "run.json"), "resume ", out_.string(), ": no run.json there (expected a "
                  "directory written by topksae.Trainer)");
    TOPKSAE_CHECK(fs::exists(checkpoint_ / "trainer_state.json"), "resume ", out_.string(), ": no checkpoint to resume "
                  "from (", checkpoint_.string(), " is missing; the run was never checkpointed)");
    const run_dir::RunFile run = run_dir::read_run_file(out_);
    TOPKSAE_CHECK(run.data.live, "resume ", out_.string(), ": the run was trained on files, not a live stream; continue "
                  "it with `topksae train --resume ", out_.string(), "`");
    cfg_ = run.config;
    if (opts_.training_tokens) cfg_.training_tokens = *opts_.training_tokens;
    cfg_.validate();
    opts_.shuffle = run.data.shuffle;
    opts_.buffer_batches = run.data.buffer_batches;
    meta_ = run.metadata;
    if (opts_.checkpoint_every_tokens == 0) opts_.checkpoint_every_tokens = run.checkpoint_every_tokens;
  } else {
    cfg_ = config_from_json(opts_.config_json, &meta_);
    if (!meta_.count("dataset_path")) meta_["dataset_path"] = json("live stream").dump();
    prepare_out_dir(out_, opts_.overwrite);
    run_dir::DataSpec data;
    data.live = true;
    data.shuffle = opts_.shuffle;
    data.buffer_batches = opts_.buffer_batches;
    run_dir::write_run_file(out_, {cfg_, data, meta_, opts_.checkpoint_every_tokens, ""});
  }

  // The queue holds a few batches beyond the mixing buffer: enough to keep the steps fed, bounded.
  // On the GPU the mixing buffer's rows live on the device and batches reach the steps device to
  // device (src/data/device_rows.h); the draws, so the rows served, are the host buffer's.
  const Device store = opts_.device == Device::cuda && opts_.shuffle == "buffer" ? Device::cuda : Device::cpu;
  stream_ = std::make_unique<LiveStream>(cfg_.d_in, opts_.shuffle, opts_.buffer_batches, cfg_.batch_size, cfg_.seed,
                                         4 * cfg_.batch_size, store);
  TrainerOptions topts;
  topts.extras.metadata_json = meta_;
  topts.device = opts_.device;
  topts.precision = precision;
  topts.should_stop = [this] { return stop_.load(); };
  topts.on_step = [this](const StepMetrics& m) {
    log_->write(m.step, m.named());
    std::lock_guard<std::mutex> lk(mu_);
    last_ = m;
    reported_ = m.step + 1;
  };
  trainer_ = std::make_unique<Trainer>(cfg_, *stream_, topts);
  if (opts_.resume) {
    trainer_->resume(checkpoint_);
    reported_ = trainer_->state().step;
    last_ckpt_step_ = trainer_->state().step;
    note_rows_taken();
  }
  log_ = std::make_unique<MetricsLog>(out_ / "metrics.jsonl", opts_.resume ? trainer_->state().step : 0);
  ckpt_steps_ = opts_.checkpoint_every_tokens > 0
                    ? std::max<int64_t>(1, (opts_.checkpoint_every_tokens + cfg_.batch_size - 1) / cfg_.batch_size)
                    : 0;
}

LiveRun::~LiveRun() {
  stop_ = true;
  stream_->queue().abort();
  if (thread_.joinable()) thread_.join();
}

void LiveRun::start_worker() {
  if (started_) return;
  started_ = true;
  thread_ = std::thread([this] { worker(); });
}

// The CLI's loop (cmd_train.cpp): run() until the next checkpoint is due, the end, or a stop.
void LiveRun::worker() {
  try {
    while (!trainer_->done()) {
      const int64_t at = trainer_->state().step;
      trainer_->run(ckpt_steps_ > 0 ? ckpt_steps_ - at % ckpt_steps_ : -1);
      log_->flush();
      if (stop_ || trainer_->exhausted()) break;
      const int64_t step = trainer_->state().step;
      if (ckpt_steps_ > 0 && step % ckpt_steps_ == 0 && !trainer_->done()) save_checkpoint_logged();
    }
  } catch (const LiveSource::Aborted&) {
    // interrupt() or the destructor: the state is consistent; the caller writes the checkpoint.
  } catch (...) {
    std::lock_guard<std::mutex> lk(mu_);
    error_ = std::current_exception();
  }
  log_->flush();
  stream_->queue().consumer_done();
}

void LiveRun::rethrow_worker_error() {
  std::exception_ptr e;
  {
    std::lock_guard<std::mutex> lk(mu_);
    e = error_;
  }
  if (e) std::rethrow_exception(e);
}

bool LiveRun::push(const float* rows, int64_t n, const Tick& tick) {
  TOPKSAE_CHECK(!finished_ && !interrupted_, "this Trainer has finished (fit() or finish() ended its stream); start "
                "a new one or topksae.Trainer.resume(out)");
  // As the file sources refuse a row holding NaN or Inf (naming it), before it reaches a step.
  const int64_t d = cfg_.d_in;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < d; ++c)
      if (!std::isfinite(rows[r * d + c]))
        throw InvalidArgument(concat("batch row ", r, " holds ", rows[r * d + c], " in column ", c,
                                     " (rows holding NaN or Inf are refused; nothing of this batch was queued)"));
  start_worker();
  bool taken = stream_->queue().push(rows, n, tick);
  if (!taken) rethrow_worker_error();
  return taken;
}

bool LiveRun::push_device(const float* rows, int64_t n, std::shared_ptr<void> hold, const Tick& tick) {
  TOPKSAE_CHECK(!finished_ && !interrupted_, "this Trainer has finished (fit() or finish() ended its stream); start "
                "a new one or topksae.Trainer.resume(out)");
  if (cuda_device() < 0)
    throw InvalidArgument("batch: CUDA rows need a Trainer with device='cuda' and shuffle='buffer' (the mixing buffer on "
                          "the GPU)");
  start_worker();
  bool taken = stream_->queue().push_device(rows, n, nullptr, std::move(hold), tick);
  if (!taken) rethrow_worker_error();
  return taken;
}

void LiveRun::wait_idle(const Tick& tick) {
  if (!started_) return;
  stream_->queue().wait_idle(tick);
  rethrow_worker_error();
}

bool LiveRun::save_checkpoint_logged() {
  try {
    trainer_->save_checkpoint(checkpoint_);
    last_ckpt_step_ = trainer_->state().step;
    return true;
  } catch (const std::exception& e) {
    std::cerr << "warning: writing the checkpoint failed: " << e.what() << "\n";
    return false;
  }
}

void LiveRun::finish(const Tick& tick) {
  if (finished_) return;
  TOPKSAE_CHECK(!interrupted_, "this run was interrupted; continue it with topksae.Trainer.resume('", out_.string(), "')");
  stream_->queue().finish();
  if (started_) {
    stream_->queue().wait_consumer_done(tick);  // the worker trains on what is left, then stops
    thread_.join();
  }
  finished_ = true;
  rethrow_worker_error();
  if (!trainer_->done())
    std::cerr << "topksae: the stream ended after " << trainer_->state().step << " of " << cfg_.total_training_steps()
              << " steps; saving the SAE as it is\n";
  if (ckpt_steps_ > 0 && last_ckpt_step_ != trainer_->state().step) save_checkpoint_logged();
  trainer_->save_final(out_);
  if (opts_.report) write_report();
}

fs::path LiveRun::interrupt() {
  stop_ = true;
  stream_->queue().abort();
  if (thread_.joinable()) thread_.join();
  interrupted_ = true;
  rethrow_worker_error();
  log_->flush();
  note_rows_taken();
  if (!save_checkpoint_logged()) throw Error("interrupted, and the checkpoint could not be written (see above)");
  return checkpoint_;
}

void LiveRun::note_rows_taken() {
  const std::string& p = trainer_->state().data_position;
  checkpoint_rows_taken_ = p.empty() ? 0 : json::parse(p).value("rows_taken", int64_t(0));
}

void LiveRun::write_report() {
  log_.reset();  // flush and close before reading it back
  const TrainState& st = trainer_->state();
  std::optional<StepMetrics> last = last_metrics();
  ReportContent rc = run_dir::report_content(
      out_, stream_->describe(), opts_.device == Device::cuda ? "cuda (" + opts_.precision + ")" : std::string("cpu"),
      cfg_, st, last, nullptr);
  rc.history = read_metrics_log(out_ / "metrics.jsonl");
  write_html_report(out_ / "report.html", rc);
}

std::optional<StepMetrics> LiveRun::last_metrics() const {
  std::lock_guard<std::mutex> lk(mu_);
  return last_;
}

int64_t LiveRun::steps() const {
  std::lock_guard<std::mutex> lk(mu_);
  return reported_;
}

bool LiveRun::training_done() const { return stream_->queue().is_consumer_done(); }

}  // namespace topksae::py
