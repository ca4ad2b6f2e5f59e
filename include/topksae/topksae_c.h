/* The C API of topksae's inference library (a thin layer over topksae/api.h), for services and
 * bindings (Python ctypes/cffi, Rust, Go) that do not speak C++.
 *
 * Conventions
 *   - Every function returns a topksae_status; TOPKSAE_OK is 0. On failure the reason is kept as
 *     this thread's last error: topksae_last_error() (valid until this thread's next call).
 *     No C++ exception ever crosses this boundary.
 *   - Handles are opaque; each *_create / *_load has a *_free that accepts NULL.
 *   - Matrices are row-major float32 [rows, cols]; indices int32; CSR indptr int64.
 *   - A model is immutable and may be used by many threads at once. A workspace serves one call at
 *     a time (one per worker thread); pass NULL to use a workspace owned by the calling thread.
 *     A hooks object is read by the calls it is passed to and must not be changed meanwhile.
 *   - opts may be NULL: host pointers, no stream, no hooks, OpenMP's default thread count.
 * See topksae/api.h for the meaning of each op and hook point.
 */
#ifndef TOPKSAE_C_H
#define TOPKSAE_C_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum topksae_status {
  TOPKSAE_OK = 0,
  TOPKSAE_ERROR_INVALID_ARGUMENT = 1, /* null pointer, wrong shape, wrong device, bad batch size */
  TOPKSAE_ERROR = 2,                  /* anything else the caller can fix: a bad file, CUDA unavailable */
  TOPKSAE_ERROR_OUT_OF_MEMORY = 3,
  TOPKSAE_ERROR_INTERNAL = 4          /* a bug: please report it with topksae_last_error() */
} topksae_status;

typedef enum topksae_device {
  TOPKSAE_DEVICE_CPU = 0,
  TOPKSAE_DEVICE_CUDA = 1,
  TOPKSAE_DEVICE_MAX_ENUM = 0x7fffffff /* not a device: keeps any int a valid value, so a bad one is an error */
} topksae_device;

typedef struct topksae_model topksae_model;
typedef struct topksae_workspace topksae_workspace;
typedef struct topksae_hooks topksae_hooks;

/* Per-call options; zero-initialise, then set what you need. */
typedef struct topksae_call {
  topksae_device memory;       /* where this call's pointers live */
  void* stream;                /* cudaStream_t of the model's device for CUDA models (NULL: the default
                                  stream); must be NULL for CPU models */
  const topksae_hooks* hooks;  /* NULL: no observers */
  int cpu_threads;             /* CPU models: OpenMP threads for this call, 0 = default */
} topksae_call;

typedef struct topksae_model_info {
  int64_t d_in, d_sae, k;
  topksae_device device;
} topksae_model_info;

/* The message of this thread's last failure ("" after a success). */
const char* topksae_last_error(void);
const char* topksae_status_name(topksae_status status);
/* "0.1.0" */
const char* topksae_version(void);

/* ---- models ---------------------------------------------------------------------------------- */
/* Loads an sae_lens SAE directory (cfg.json + sae_weights.safetensors) onto `device`. */
topksae_status topksae_model_load(const char* dir, topksae_device device, topksae_model** out);
/* As topksae_model_load, with the CUDA device ordinal (ignored for TOPKSAE_DEVICE_CPU) and the
 * encoder GEMM precision of a CUDA model: "fp32" (NULL means fp32), "tf32" or "bf16". */
topksae_status topksae_model_load_ex(const char* dir, topksae_device device, int cuda_device,
                                     const char* cuda_precision, topksae_model** out);
/* From f32 weights in host memory (copied): W_enc [d_in, d_sae], b_enc [d_sae],
 * W_dec [d_sae, d_in], b_dec [d_in]; normalize is sae_lens's name ("none", "layer_norm", ...). */
topksae_status topksae_model_from_weights(int64_t d_in, int64_t d_sae, int64_t k, int apply_b_dec_to_input,
                                          const char* normalize, const float* W_enc, const float* b_enc,
                                          const float* W_dec, const float* b_dec, topksae_device device,
                                          topksae_model** out);
void topksae_model_free(topksae_model* model);
topksae_status topksae_model_get_info(const topksae_model* model, topksae_model_info* out);

/* ---- workspaces ------------------------------------------------------------------------------ */
topksae_status topksae_workspace_create(topksae_workspace** out);
void topksae_workspace_free(topksae_workspace* ws);

/* ---- hooks ----------------------------------------------------------------------------------- */
/* Receives the intermediate at `hook_name` as a writable [rows, cols] matrix in HOST memory on every
 * model (`device` is TOPKSAE_DEVICE_CPU; a CUDA model copies the intermediate to the host and the
 * changes back, `stream` is the call's stream for information). Return 0 to go on; anything else
 * fails the call with TOPKSAE_ERROR. */
typedef int (*topksae_hook_fn)(void* user_data, const char* hook_name, float* data, int64_t rows, int64_t cols,
                               topksae_device device, void* stream);
topksae_status topksae_hooks_create(topksae_hooks** out);
void topksae_hooks_free(topksae_hooks* hooks);
/* hook_name: "hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons",
 * "hook_sae_error" or "hook_sae_output". *id (may be NULL) identifies it for topksae_hooks_remove. */
topksae_status topksae_hooks_add(topksae_hooks* hooks, const char* hook_name, topksae_hook_fn fn, void* user_data,
                                 int64_t* id);
topksae_status topksae_hooks_remove(topksae_hooks* hooks, int64_t id);

/* ---- inference ------------------------------------------------------------------------------- */
/* x [rows, d_in] -> indices, values [rows, k]. */
topksae_status topksae_encode_topk(const topksae_model* model, topksae_workspace* ws, const topksae_call* opts,
                                   const float* x, int64_t rows, int64_t d_in, int32_t* indices, float* values);
/* x [rows, d_in] -> CSR indptr [rows + 1], indices/values [capacity]; *nnz receives the count.
 * capacity = rows * k always suffices unless a hook adds latents. */
topksae_status topksae_encode_csr(const topksae_model* model, topksae_workspace* ws, const topksae_call* opts,
                                  const float* x, int64_t rows, int64_t d_in, int64_t* indptr, int32_t* indices,
                                  float* values, int64_t capacity, int64_t* nnz);
/* x [rows, d_in] -> z [rows, d_sae]. */
topksae_status topksae_encode_dense(const topksae_model* model, topksae_workspace* ws, const topksae_call* opts,
                                    const float* x, int64_t rows, int64_t d_in, float* z);
/* indices, values [rows, width] -> out [rows, d_in]. */
topksae_status topksae_decode_topk(const topksae_model* model, topksae_workspace* ws, const topksae_call* opts,
                                   const int32_t* indices, const float* values, int64_t rows, int64_t width,
                                   float* out);
topksae_status topksae_decode_csr(const topksae_model* model, topksae_workspace* ws, const topksae_call* opts,
                                  const int64_t* indptr, const int32_t* indices, const float* values, int64_t rows,
                                  float* out);
/* z [rows, d_sae] -> out [rows, d_in]. */
topksae_status topksae_decode_dense(const topksae_model* model, topksae_workspace* ws, const topksae_call* opts,
                                    const float* z, int64_t rows, float* out);
/* x [rows, d_in] -> out [rows, d_in]; use_error_term != 0 adds sae_lens's error term. */
topksae_status topksae_forward(const topksae_model* model, topksae_workspace* ws, const topksae_call* opts,
                               const float* x, int64_t rows, int64_t d_in, int use_error_term, float* out);

#ifdef __cplusplus
}
#endif

#endif /* TOPKSAE_C_H */
