// The C API (topksae_c.h): handles over the C++ API, every entry point behind the exception fence.
// Nothing here allocates on a successful inference call (the thread's workspace is made once).
#include <cstring>

#include "api/c_api_internal.h"

using namespace topksae;
using namespace topksae::c_api;

namespace topksae::c_api {

std::string& last_error() {
  thread_local std::string message;
  return message;
}

topksae_status fail(topksae_status status, const char* message) noexcept {
  try {
    last_error() = message;
  } catch (...) {  // no memory for the message: keep the status
  }
  return status;
}

Device to_device(topksae_device d) {
  require(d == TOPKSAE_DEVICE_CPU || d == TOPKSAE_DEVICE_CUDA, "unknown topksae_device ", int(d));
  return d == TOPKSAE_DEVICE_CPU ? Device::cpu : Device::cuda;
}

}  // namespace topksae::c_api

namespace {

const Model& model_of(const topksae_model* m, const char* fn) {
  require(m != nullptr && m->model != nullptr, fn, ": model is a null handle");
  return *m->model;
}

Workspace& workspace_of(topksae_workspace* ws) {
  thread_local Workspace mine;  // NULL workspace: the calling thread's own
  return ws ? ws->ws : mine;
}

CallOptions options_of(const topksae_call* c) {
  CallOptions o;
  if (!c) return o;
  o.memory = to_device(c->memory);
  o.stream = static_cast<Stream>(c->stream);
  o.hooks = c->hooks ? &c->hooks->hooks : nullptr;
  o.cpu_threads = c->cpu_threads;
  return o;
}

}  // namespace

extern "C" {

const char* topksae_last_error(void) { return last_error().c_str(); }

const char* topksae_status_name(topksae_status status) {
  switch (status) {
    case TOPKSAE_OK: return "ok";
    case TOPKSAE_ERROR_INVALID_ARGUMENT: return "invalid argument";
    case TOPKSAE_ERROR: return "error";
    case TOPKSAE_ERROR_OUT_OF_MEMORY: return "out of memory";
    case TOPKSAE_ERROR_INTERNAL: return "internal error";
  }
  return "unknown status";
}

const char* topksae_version(void) { return "0.1.0"; }

topksae_status topksae_model_from_weights(int64_t d_in, int64_t d_sae, int64_t k, int apply_b_dec_to_input,
                                          const char* normalize, const float* W_enc, const float* b_enc,
                                          const float* W_dec, const float* b_dec, topksae_device device,
                                          topksae_model** out) {
  return fence([&] {
    require(out != nullptr, "topksae_model_from_weights: out is a null pointer");
    *out = nullptr;
    require(W_enc && b_enc && W_dec && b_dec, "topksae_model_from_weights: a weight pointer is null");
    Sae sae;
    sae.cfg.d_in = d_in;
    sae.cfg.d_sae = d_sae;
    sae.cfg.k = k;
    sae.cfg.apply_b_dec_to_input = apply_b_dec_to_input != 0;
    sae.cfg.normalize = normalize ? normalize_from_name(normalize) : Normalize::none;
    sae.cfg.validate();
    sae.params.W_enc.assign(W_enc, W_enc + d_in * d_sae);
    sae.params.b_enc.assign(b_enc, b_enc + d_sae);
    sae.params.W_dec.assign(W_dec, W_dec + d_sae * d_in);
    sae.params.b_dec.assign(b_dec, b_dec + d_in);
    ModelOptions opts;
    opts.device = to_device(device);
    auto m = std::make_unique<topksae_model>();
    m->model = Model::from_sae(std::move(sae), opts);
    *out = m.release();
  });
}

void topksae_model_free(topksae_model* model) { delete model; }

topksae_status topksae_model_get_info(const topksae_model* model, topksae_model_info* out) {
  return fence([&] {
    const Model& m = model_of(model, "topksae_model_get_info");
    require(out != nullptr, "topksae_model_get_info: out is a null pointer");
    out->d_in = m.d_in();
    out->d_sae = m.d_sae();
    out->k = m.k();
    out->device = m.device() == Device::cpu ? TOPKSAE_DEVICE_CPU : TOPKSAE_DEVICE_CUDA;
  });
}

topksae_status topksae_workspace_create(topksae_workspace** out) {
  return fence([&] {
    require(out != nullptr, "topksae_workspace_create: out is a null pointer");
    *out = new topksae_workspace();
  });
}

void topksae_workspace_free(topksae_workspace* ws) { delete ws; }

topksae_status topksae_hooks_create(topksae_hooks** out) {
  return fence([&] {
    require(out != nullptr, "topksae_hooks_create: out is a null pointer");
    *out = new topksae_hooks();
  });
}

void topksae_hooks_free(topksae_hooks* hooks) { delete hooks; }

topksae_status topksae_hooks_add(topksae_hooks* hooks, const char* hook_name, topksae_hook_fn fn, void* user_data,
                                 int64_t* id) {
  return fence([&] {
    require(hooks != nullptr, "topksae_hooks_add: hooks is a null handle");
    require(hook_name != nullptr, "topksae_hooks_add: hook_name is a null pointer");
    require(fn != nullptr, "topksae_hooks_add: fn is a null pointer");
    const HookPoint point = hook_from_name(hook_name);
    const Hooks::Id got = hooks->hooks.add(point, [fn, user_data](const HookView& v) {
      const std::string_view name = topksae::hook_name(v.point);  // a NUL-terminated literal
      const int rc = fn(user_data, name.data(), v.data, v.rows, v.cols,
                        v.device == Device::cpu ? TOPKSAE_DEVICE_CPU : TOPKSAE_DEVICE_CUDA, v.stream);
      if (rc != 0) throw Error(concat("the observer at ", name, " returned ", rc));
    });
    if (id) *id = got;
  });
}

topksae_status topksae_hooks_remove(topksae_hooks* hooks, int64_t id) {
  return fence([&] {
    require(hooks != nullptr, "topksae_hooks_remove: hooks is a null handle");
    require(hooks->hooks.remove(id), "topksae_hooks_remove: no observer with id ", id);
  });
}

topksae_status topksae_encode_topk(const topksae_model* model, topksae_workspace* ws, const topksae_call* opts,
                                   const float* x, int64_t rows, int64_t d_in, int32_t* indices, float* values) {
  return fence([&] {
    const Model& m = model_of(model, "topksae_encode_topk");
    m.encode_topk(workspace_of(ws), {x, rows, d_in}, {indices, rows, m.k()}, {values, rows, m.k()},
                  options_of(opts));
  });
}

topksae_status topksae_encode_csr(const topksae_model* model, topksae_workspace* ws, const topksae_call* opts,
                                  const float* x, int64_t rows, int64_t d_in, int64_t* indptr, int32_t* indices,
                                  float* values, int64_t capacity, int64_t* nnz) {
  return fence([&] {
    const Model& m = model_of(model, "topksae_encode_csr");
    require(nnz != nullptr, "topksae_encode_csr: nnz is a null pointer");
    *nnz = m.encode_csr(workspace_of(ws), {x, rows, d_in}, CsrOut{indptr, indices, values, capacity},
                        options_of(opts));
  });
}

topksae_status topksae_encode_dense(const topksae_model* model, topksae_workspace* ws, const topksae_call* opts,
                                    const float* x, int64_t rows, int64_t d_in, float* z) {
  return fence([&] {
    const Model& m = model_of(model, "topksae_encode_dense");
    m.encode_dense(workspace_of(ws), {x, rows, d_in}, {z, rows, m.d_sae()}, options_of(opts));
  });
}

topksae_status topksae_decode_topk(const topksae_model* model, topksae_workspace* ws, const topksae_call* opts,
                                   const int32_t* indices, const float* values, int64_t rows, int64_t width,
                                   float* out) {
  return fence([&] {
    const Model& m = model_of(model, "topksae_decode_topk");
    m.decode_topk(workspace_of(ws), {indices, rows, width}, {values, rows, width}, {out, rows, m.d_in()},
                  options_of(opts));
  });
}

topksae_status topksae_decode_csr(const topksae_model* model, topksae_workspace* ws, const topksae_call* opts,
                                  const int64_t* indptr, const int32_t* indices, const float* values, int64_t rows,
                                  float* out) {
  return fence([&] {
    const Model& m = model_of(model, "topksae_decode_csr");
    m.decode_csr(workspace_of(ws), CsrIn{indptr, indices, values, rows}, {out, rows, m.d_in()}, options_of(opts));
  });
}

topksae_status topksae_decode_dense(const topksae_model* model, topksae_workspace* ws, const topksae_call* opts,
                                    const float* z, int64_t rows, float* out) {
  return fence([&] {
    const Model& m = model_of(model, "topksae_decode_dense");
    m.decode_dense(workspace_of(ws), {z, rows, m.d_sae()}, {out, rows, m.d_in()}, options_of(opts));
  });
}

topksae_status topksae_forward(const topksae_model* model, topksae_workspace* ws, const topksae_call* opts,
                               const float* x, int64_t rows, int64_t d_in, int use_error_term, float* out) {
  return fence([&] {
    const Model& m = model_of(model, "topksae_forward");
    m.forward(workspace_of(ws), {x, rows, d_in}, {out, rows, d_in}, use_error_term != 0, options_of(opts));
  });
}

}  // extern "C"
