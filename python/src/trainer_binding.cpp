// topksae._core.LiveRun: the live training run (live_run.h) with Python's rules added: the GIL is
// released while the engine works or waits, and Ctrl-C is noticed while it waits (PyErr_CheckSignals
// every 50 ms raises KeyboardInterrupt into the caller, which then calls interrupt() for the
// checkpoint: python/topksae/_trainer.py). Batches may be host or CUDA arrays; CUDA ones are copied
// to the host queue (the trainer's steps read host batches; the mixing buffer lives on the host).
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <vector>

#include "arrays.h"
#include "bindings.h"
#include "live_run.h"
#include "topksae/api.h"

namespace topksae::py {
namespace {

// Runs while the engine waits: Ctrl-C (or any pending signal handler's exception) interrupts.
void check_signals() {
  nb::gil_scoped_acquire gil;
  if (PyErr_CheckSignals() != 0) throw nb::python_error();
}

Device device_from(const std::string& d) {
  if (d == "cpu") return Device::cpu;
  if (d == "cuda") {
    if (!cuda_available()) throw InvalidArgument("device 'cuda': " + cuda_unavailable_reason());
    return Device::cuda;
  }
  throw InvalidArgument("device must be 'cpu' or 'cuda', got '" + d + "'");
}

nb::object metrics_dict(const std::optional<StepMetrics>& m) {
  if (!m) return nb::none();
  nb::dict d;
  d["step"] = m->step;
  for (const auto& [name, value] : m->named()) d[name.c_str()] = value;
  return d;
}

std::unique_ptr<LiveRun> make_run(LiveRunOptions o) {
  nb::gil_scoped_release nogil;
  return std::make_unique<LiveRun>(std::move(o));
}

struct PyLiveRun {
  std::unique_ptr<LiveRun> run;

  bool push(nb::handle batch) {
    ArrayIn a = read_matrix(batch, "batch", "float32", run->config().d_in);
    if (a.rows == 0) return !run->training_done();
    nb::gil_scoped_release nogil;
    if (a.device == Device::cpu) return run->push(static_cast<const float*>(a.data), a.rows, check_signals);
    std::vector<float> host(size_t(a.rows * a.cols));  // [rows, d_in]
    detail::copy_bytes(host.data(), Device::cpu, a.data, Device::cuda, host.size() * sizeof(float));
    return run->push(host.data(), a.rows, check_signals);
  }
  void wait_idle() {
    nb::gil_scoped_release nogil;
    run->wait_idle(check_signals);
  }
  void finish() {
    nb::gil_scoped_release nogil;
    run->finish(check_signals);
  }
  std::string interrupt() {
    nb::gil_scoped_release nogil;
    return run->interrupt().string();
  }
};

}  // namespace

void bind_trainer(nb::module_& m) {
  nb::class_<PyLiveRun>(m, "LiveRun",
                        "The engine side of topksae.Trainer (use that class): a training run fed by push(), "
                        "its steps on a worker thread, its run directory as `topksae train` writes it.")
      .def_static(
          "create",
          [](const std::string& out, const std::string& config_json, const std::string& device,
             const std::string& precision, const std::string& shuffle, int64_t buffer_batches,
             int64_t checkpoint_every, bool overwrite, bool report) {
            LiveRunOptions o;
            o.out = out;
            o.config_json = config_json;
            o.device = device_from(device);
            o.precision = precision;
            o.shuffle = shuffle;
            o.buffer_batches = buffer_batches;
            o.checkpoint_every_tokens = checkpoint_every;
            o.overwrite = overwrite;
            o.report = report;
            return PyLiveRun{make_run(std::move(o))};
          },
          nb::arg("out"), nb::arg("config_json"), nb::arg("device"), nb::arg("precision"), nb::arg("shuffle"),
          nb::arg("buffer_batches"), nb::arg("checkpoint_every"), nb::arg("overwrite"), nb::arg("report"),
          "A fresh run in `out` with the training config given as JSON (sae_lens keys).")
      .def_static(
          "resume",
          [](const std::string& out, const std::string& device, const std::string& precision,
             std::optional<int64_t> training_tokens, int64_t checkpoint_every, bool report) {
            LiveRunOptions o;
            o.out = out;
            o.resume = true;
            o.device = device_from(device);
            o.precision = precision;
            o.training_tokens = training_tokens;
            o.checkpoint_every_tokens = checkpoint_every;
            o.report = report;
            return PyLiveRun{make_run(std::move(o))};
          },
          nb::arg("out"), nb::arg("device"), nb::arg("precision"), nb::arg("training_tokens").none(),
          nb::arg("checkpoint_every"), nb::arg("report"), "Continues the run in `out` from its checkpoint.")
      .def("push", &PyLiveRun::push, nb::arg("batch"),
           "Queues rows [n, d_in] (float32, C-contiguous, cpu or cuda). Waits while the queue is full. "
           "False once training is over.")
      .def("wait_idle", &PyLiveRun::wait_idle, "Waits until every usable pushed row has been trained on.")
      .def("finish", &PyLiveRun::finish, "Ends the stream: trains on the rest, saves the SAE and the report.")
      .def("interrupt", &PyLiveRun::interrupt, "Stops after the current step and writes the checkpoint; returns its path.")
      .def_prop_ro("last_metrics", [](const PyLiveRun& r) { return metrics_dict(r.run->last_metrics()); },
                   "The latest step's metrics (sae_lens names), or None.")
      .def_prop_ro("steps", [](const PyLiveRun& r) { return r.run->steps(); }, "Steps trained so far.")
      .def_prop_ro("training_done", [](const PyLiveRun& r) { return r.run->training_done(); },
                   "The run has stopped taking rows (done, stream ended, failed or interrupted).")
      .def_prop_ro("config_json", [](const PyLiveRun& r) { return train_config_to_json(r.run->config()); },
                   "The training config (all keys, sae_lens names).")
      .def_prop_ro("checkpoint_rows_taken", [](const PyLiveRun& r) { return r.run->checkpoint_rows_taken(); },
                   "Rows of the stream the checkpoint's state consumed (after resume or interrupt).")
      .def_prop_ro("out", [](const PyLiveRun& r) { return r.run->out().string(); })
      .def_prop_ro("describe", [](const PyLiveRun& r) { return r.run->describe(); });
}

}  // namespace topksae::py
