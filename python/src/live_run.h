// A training run fed live (topksae.Trainer): the run directory the CLI writes (run.json,
// metrics.jsonl, checkpoint/, report.html, the final sae_lens SAE) around a Trainer that reads a
// LiveStream. The steps run on a worker thread so that the producer (Python: a model's forward
// pass) and the steps overlap, and on the GPU the steps are queued ahead without waiting for the
// host. No Python here: the binding (trainer_binding.cpp) adds the GIL and Ctrl-C handling.
//
// The run directory is written through src/train/run_dir.h, as tools/topksae/cmd_train.cpp writes
// it (out-dir checks, run.json, the --config merge, report content); run.json's "data" is
// {"source": "live", "shuffle", "buffer_batches"}
// instead of a file description, so `topksae train --resume` refuses it (a live stream cannot be
// re-read) and topksae.Trainer.resume continues it.
#pragma once
#include <atomic>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "topksae/live_source.h"
#include "topksae/report.h"
#include "topksae/train.h"

namespace topksae::py {

struct LiveRunOptions {
  std::filesystem::path out;
  // A JSON object of training config keys with sae_lens names (what `topksae train --config` reads;
  // the sae_lens runner keys model_name, hook_name, ... go into cfg.json as metadata). Fresh runs.
  std::string config_json = "{}";
  Device device = Device::cpu;
  std::string precision = "fp32";  // fp32 | tf32 | bf16 (cuda)
  std::string shuffle = "buffer";  // buffer | none
  int64_t buffer_batches = 16;
  int64_t checkpoint_every_tokens = 0;
  bool overwrite = false;
  bool report = true;
  bool resume = false;                    // continue the run in `out` from its checkpoint
  std::optional<int64_t> training_tokens;  // resume: a new length for the run
};

class LiveRun {
 public:
  using Tick = std::function<void()>;
  explicit LiveRun(LiveRunOptions o);
  ~LiveRun();  // stops the worker (no checkpoint: call interrupt() for one)

  // Rows [n, d_in] from the host. Waits while the queue is full (tick runs meanwhile). Returns
  // false once training is over (done, or failed: then it throws the worker's error).
  bool push(const float* rows, int64_t n, const Tick& tick = {});
  // Rows [n, d_in] in device memory of cuda_device() (a CUDA run with shuffle "buffer"), already
  // ordered before device_stream() by the producer (DLPack __dlpack__(stream=device_stream())):
  // copied device to device into the mixing buffer without waiting for the GPU; `hold` keeps them
  // alive until then. Not checked for NaN / Inf (that would wait for the GPU).
  bool push_device(const float* rows, int64_t n, std::shared_ptr<void> hold, const Tick& tick = {});
  // The CUDA ordinal of the device mixing buffer, or -1 when batches go through the host.
  int cuda_device() const { return stream_->queue().store_device(); }
  Stream device_stream() const { return stream_->queue().store_stream(); }
  // Waits until the worker has trained on everything it can use of what was pushed.
  void wait_idle(const Tick& tick = {});
  // End of the stream: trains on what is left, then saves the final SAE, the last checkpoint (when
  // checkpointing) and the report. Idempotent.
  void finish(const Tick& tick = {});
  // Ctrl-C: stops after the current step and writes the checkpoint; returns its directory.
  std::filesystem::path interrupt();

  // Rows of the stream the trainer's state has consumed (the scaling-factor estimate's included):
  // after resume, the checkpoint's; after interrupt(), the interrupted state's. With shuffle "none"
  // a producer that skips this many rows of its stream continues the run exactly.
  int64_t checkpoint_rows_taken() const { return checkpoint_rows_taken_; }
  std::optional<StepMetrics> last_metrics() const;
  int64_t steps() const;  // steps whose metrics were reported
  bool training_done() const;  // the worker has stopped (done, stream ended, failed or stopped)
  const TrainConfig& config() const { return cfg_; }
  const std::filesystem::path& out() const { return out_; }
  std::string describe() const { return stream_->describe(); }

 private:
  void start_worker();
  void worker();
  void rethrow_worker_error();
  bool save_checkpoint_logged();
  void write_report();

  LiveRunOptions opts_;
  TrainConfig cfg_;
  std::filesystem::path out_, checkpoint_;
  std::map<std::string, std::string> meta_;
  std::unique_ptr<LiveStream> stream_;
  std::unique_ptr<MetricsLog> log_;
  std::unique_ptr<Trainer> trainer_;
  int64_t ckpt_steps_ = 0, last_ckpt_step_ = -1, checkpoint_rows_taken_ = 0;
  void note_rows_taken();

  mutable std::mutex mu_;  // guards the fields below (the worker writes them)
  std::optional<StepMetrics> last_;
  int64_t reported_ = 0;
  std::exception_ptr error_;

  std::atomic<bool> stop_{false};
  std::thread thread_;
  bool started_ = false, finished_ = false, interrupted_ = false;
};

}  // namespace topksae::py
