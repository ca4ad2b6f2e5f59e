// topksae._core.LiveRun: the live training run (live_run.h) with Python's rules added: the GIL is
// released while the engine works or waits, and Ctrl-C is noticed while it waits (PyErr_CheckSignals
// every 50 ms raises KeyboardInterrupt into the caller, which then calls interrupt() for the
// checkpoint: python/topksae/_trainer.py). Batches may be host or CUDA arrays. A CUDA array given to
// a CUDA run with shuffle "buffer" goes device to device into the mixing buffer on the GPU: it is
// exported with __dlpack__(stream=<the buffer's copy stream>), so the producer orders its work
// (the forward pass) before our copy without the host waiting, and it is kept alive until the copy
// has run. Otherwise a CUDA array is copied to the host queue.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <mutex>
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

// Arrays held for in-flight device copies. Their last reference may drop on the trainer's thread
// (DeviceRows releases a hold once its copy has run), where there is no GIL: they wait here and are
// freed by the next call that holds the GIL.
struct Released {
  std::mutex mu;
  std::vector<nb::ndarray<nb::ro>*> arrays;
};
Released& released() {
  static Released* r = new Released;  // never destroyed: holds may drop during interpreter exit
  return *r;
}
void free_released() {  // GIL held
  std::vector<nb::ndarray<nb::ro>*> v;
  {
    std::lock_guard<std::mutex> lk(released().mu);
    v.swap(released().arrays);
  }
  for (auto* a : v) delete a;
}
std::shared_ptr<void> hold(const nb::ndarray<nb::ro>& a) {
  return std::shared_ptr<void>(new nb::ndarray<nb::ro>(a), [](void* p) {
    std::lock_guard<std::mutex> lk(released().mu);
    released().arrays.push_back(static_cast<nb::ndarray<nb::ro>*>(p));
  });
}

// (kind, ordinal) of a DLPack producer, or (0, 0) when it has no __dlpack_device__.
std::pair<int, int> dlpack_device(nb::handle obj) {
  if (!nb::hasattr(obj, "__dlpack_device__")) return {0, 0};
  nb::tuple t = nb::cast<nb::tuple>(obj.attr("__dlpack_device__")());
  return {nb::cast<int>(t[0]), nb::cast<int>(t[1])};
}

struct PyLiveRun {
  std::unique_ptr<LiveRun> run;
  ~PyLiveRun() {
    if (!run) return;
    {
      nb::gil_scoped_release nogil;
      run.reset();  // waits for the GPU: every hold is released
    }
    free_released();
  }
  PyLiveRun(std::unique_ptr<LiveRun> r) : run(std::move(r)) {}
  PyLiveRun(PyLiveRun&&) = default;

  bool push(nb::handle batch) {
    free_released();
    const int dev = run->cuda_device();
    const auto [kind, ordinal] = dlpack_device(batch);
    constexpr int kDLCUDA = 2;
    if (dev >= 0 && kind == kDLCUDA) {
      if (ordinal != dev)
        throw nb::value_error(("batch: on cuda:" + std::to_string(ordinal) + ", but this Trainer trains on cuda:" +
                               std::to_string(dev) + " (move it there first: batch.to('cuda:" + std::to_string(dev) +
                               "'))").c_str());
      // The producer makes our copy stream wait for its queued work (DLPack's stream argument).
      nb::object capsule = batch.attr("__dlpack__")(nb::arg("stream") = reinterpret_cast<intptr_t>(run->device_stream()));
      ArrayIn a = read_matrix(capsule, "batch", "float32", run->config().d_in);
      if (a.rows == 0) return !run->training_done();
      std::shared_ptr<void> keep = hold(a.array);
      nb::gil_scoped_release nogil;
      return run->push_device(static_cast<const float*>(a.data), a.rows, std::move(keep), check_signals);
    }
    ArrayIn a = read_matrix(batch, "batch", "float32", run->config().d_in);
    if (a.rows == 0) return !run->training_done();
    nb::gil_scoped_release nogil;
    if (a.device == Device::cpu) return run->push(static_cast<const float*>(a.data), a.rows, check_signals);
    std::vector<float> host(size_t(a.rows * a.cols));  // [rows, d_in]
    detail::copy_bytes(host.data(), Device::cpu, a.data, Device::cuda, host.size() * sizeof(float));
    return run->push(host.data(), a.rows, check_signals);
  }
  void wait_idle() {
    {
      nb::gil_scoped_release nogil;
      run->wait_idle(check_signals);
    }
    free_released();
  }
  void finish() {
    {
      nb::gil_scoped_release nogil;
      run->finish(check_signals);
    }
    free_released();
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
