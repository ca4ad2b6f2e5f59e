// topksae.SAE: the inference API (include/topksae/api.h) over DLPack arrays. Inputs are used in
// place (no copy) when they are float32, C-contiguous and on the CPU or the model's GPU; results
// are new arrays on the input's device, in the input's framework. The GIL is released while the
// engine runs; one SAE object serialises its calls (it owns one Workspace), so share it between
// threads freely but expect no parallelism from it; load one per thread for that.
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>

#include <memory>
#include <mutex>

#include "arrays.h"
#include "bindings.h"
#include "topksae/api.h"

namespace topksae::py {
namespace {

class PySae {
 public:
  PySae(const std::string& path, const std::string& device, const std::string& precision, int device_id) {
    ModelOptions o;
    if (device == "cpu") {
      o.device = Device::cpu;
      if (precision != "fp32")
        throw nb::value_error(("precision '" + precision + "' applies to the GPU's encoder GEMM; device 'cpu' "
                               "computes in fp32").c_str());
    } else if (device == "cuda") {
      if (!cuda_available())
        throw nb::value_error(("device 'cuda': " + cuda_unavailable_reason()).c_str());
      o.device = Device::cuda;
      o.cuda_device = device_id;
    } else {
      throw nb::value_error(("device must be 'cpu' or 'cuda', got '" + device + "'").c_str());
    }
    if (precision != "fp32" && precision != "tf32" && precision != "bf16")
      throw nb::value_error(("precision must be fp32, tf32 or bf16, got '" + precision + "'").c_str());
    o.cuda_precision = precision;
    nb::gil_scoped_release nogil;
    model_ = Model::load(path, o);
    device_id_ = device_id;
  }

  nb::tuple encode(nb::handle x_obj) {
    ArrayIn x = read_matrix(x_obj, "x", "float32", model_->d_in());
    CallOptions call = call_for(x, "x");
    float* values = nullptr;
    int32_t* indices = nullptr;
    nb::object v = new_matrix<float>(x, x.rows, model_->k(), &values);
    nb::object i = new_matrix<int32_t>(x, x.rows, model_->k(), &indices);
    {
      nb::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lk(mu_);
      model_->encode_topk(ws_, {static_cast<const float*>(x.data), x.rows, x.cols}, {indices, x.rows, model_->k()},
                          {values, x.rows, model_->k()}, call);
    }
    return nb::make_tuple(v, i);
  }

  nb::object decode(nb::handle values_obj, nb::handle indices_obj) {
    ArrayIn v = read_matrix(values_obj, "values", "float32", -1);
    ArrayIn i = read_matrix(indices_obj, "indices", "int32", -1);
    if (v.rows != i.rows || v.cols != i.cols)
      throw nb::value_error(("values and indices must have the same shape [rows, k], got [" + std::to_string(v.rows) +
                             ", " + std::to_string(v.cols) + "] and [" + std::to_string(i.rows) + ", " +
                             std::to_string(i.cols) + "]").c_str());
    if (v.device != i.device || v.device_id != i.device_id)
      throw nb::value_error("values and indices must be on the same device");
    CallOptions call = call_for(v, "values");
    float* out = nullptr;
    nb::object o = new_matrix<float>(v, v.rows, model_->d_in(), &out);
    {
      nb::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lk(mu_);
      model_->decode_topk(ws_, {static_cast<const int32_t*>(i.data), i.rows, i.cols},
                          {static_cast<const float*>(v.data), v.rows, v.cols}, {out, v.rows, model_->d_in()}, call);
    }
    return o;
  }

  nb::object forward(nb::handle x_obj, bool use_error_term) {
    ArrayIn x = read_matrix(x_obj, "x", "float32", model_->d_in());
    CallOptions call = call_for(x, "x");
    float* out = nullptr;
    nb::object o = new_matrix<float>(x, x.rows, x.cols, &out);
    {
      nb::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lk(mu_);
      model_->forward(ws_, {static_cast<const float*>(x.data), x.rows, x.cols}, {out, x.rows, x.cols}, use_error_term,
                      call);
    }
    return o;
  }

  int64_t d_in() const { return model_->d_in(); }
  int64_t d_sae() const { return model_->d_sae(); }
  int64_t k() const { return model_->k(); }
  std::string device() const {
    return model_->device() == Device::cpu ? "cpu" : "cuda:" + std::to_string(device_id_);
  }
  std::string normalize_activations() const { return std::string(normalize_name(model_->config().normalize)); }
  std::string repr() const {
    return "topksae.SAE(d_in=" + std::to_string(d_in()) + ", d_sae=" + std::to_string(d_sae()) +
           ", k=" + std::to_string(k()) + ", device='" + device() + "')";
  }

 private:
  // Device memory must be on this model's GPU; host memory is fine for both kinds of model.
  CallOptions call_for(const ArrayIn& a, const char* arg) const {
    CallOptions c;
    c.memory = a.device;
    if (a.device == Device::cuda) {
      if (model_->device() != Device::cuda)
        throw nb::value_error((std::string(arg) + " is on cuda:" + std::to_string(a.device_id) +
                               " but the SAE was loaded on the cpu (topksae.load(path, device='cuda'), or move "
                               "the input to the cpu)").c_str());
      if (a.device_id != device_id_)
        throw nb::value_error((std::string(arg) + " is on cuda:" + std::to_string(a.device_id) +
                               " but the SAE was loaded on cuda:" + std::to_string(device_id_)).c_str());
    }
    return c;
  }

  std::shared_ptr<const Model> model_;
  int device_id_ = 0;
  Workspace ws_;
  std::mutex mu_;
};

}  // namespace

void bind_sae(nb::module_& m) {
  // For the zero-copy tests: the address encode() would read x from (no copy means it equals the
  // producer's own pointer: x.ctypes.data, t.data_ptr()).
  m.def(
      "_input_address", [](nb::handle x) { return uintptr_t(read_matrix(x, "x", "float32", -1).data); }, nb::arg("x"),
      "The address the engine reads a float32 [rows, cols] array from (tests: zero-copy checks).");
  nb::class_<PySae>(m, "SAE",
                    "A TopK SAE loaded for inference (topksae.load). Arrays in: anything with __dlpack__ "
                    "or the buffer protocol (numpy, torch CPU or CUDA), float32, C-contiguous, [rows, d_in].\n"
                    "Inputs are read in place (no copy); results are new arrays on the input's device, in the "
                    "input's framework (torch in, torch out; numpy otherwise on the CPU).\n"
                    "CUDA inputs: the work is queued on the legacy default stream (torch's default stream), "
                    "so torch code on that stream sees the results in order.")
      .def(nb::init<const std::string&, const std::string&, const std::string&, int>(), nb::arg("path"),
           nb::arg("device") = "cpu", nb::arg("precision") = "fp32", nb::arg("device_id") = 0,
           "Loads an sae_lens SAE directory (cfg.json + sae_weights.safetensors). Prefer topksae.load().")
      .def("encode", &PySae::encode, nb::arg("x"),
           "x [rows, d_in] float32 -> (values [rows, k] float32, indices [rows, k] int32): per row the k "
           "selected latents, values after ReLU, sorted by value descending (ties: lower index first).\n"
           "A selected latent whose pre-activation was <= 0 keeps its slot with value 0.")
      .def("decode", &PySae::decode, nb::arg("values"), nb::arg("indices"),
           "(values [rows, k] float32, indices [rows, k] int32) -> reconstruction [rows, d_in] = z @ W_dec + b_dec.\n"
           "An input normalisation (constant_norm_rescale, layer_norm) is not undone: use forward() for the "
           "full round trip.")
      .def("forward", &PySae::forward, nb::arg("x"), nb::arg("use_error_term") = false,
           "x [rows, d_in] -> sae_lens's forward: encode, decode, undo the normalisation; with "
           "use_error_term the output is x_hat + (x - x_hat), as sae_lens computes it.")
      .def("__call__", &PySae::forward, nb::arg("x"), nb::arg("use_error_term") = false, "Same as forward().")
      .def_prop_ro("d_in", &PySae::d_in, "input width")
      .def_prop_ro("d_sae", &PySae::d_sae, "number of latents")
      .def_prop_ro("k", &PySae::k, "latents kept per row")
      .def_prop_ro("device", &PySae::device, "'cpu' or 'cuda:N'")
      .def_prop_ro("normalize_activations", &PySae::normalize_activations, "sae_lens's normalize_activations")
      .def("__repr__", &PySae::repr);
}

}  // namespace topksae::py
