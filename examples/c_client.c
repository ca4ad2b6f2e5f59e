/* A C client of topksae_c.h: build a small SAE from weights in memory, encode a batch into top-k
 * pairs and CSR, decode it back, run forward with an ablation observer, and show a misuse error.
 * With a directory argument it loads that SAE instead:  topksae_example_c [SAE_DIR]  */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topksae/topksae_c.h"

#define CHECK(call)                                                                         \
  do {                                                                                      \
    topksae_status s_ = (call);                                                             \
    if (s_ != TOPKSAE_OK) {                                                                 \
      fprintf(stderr, "%s failed: %s: %s\n", #call, topksae_status_name(s_), topksae_last_error()); \
      return 1;                                                                             \
    }                                                                                       \
  } while (0)

static float lcg(unsigned* state) { /* uniform in [-1, 1), reproducible everywhere */
  *state = *state * 1664525u + 1013904223u;
  return (float)((*state >> 8) & 0xffffff) / 8388608.0f - 1.0f;
}

static float* random_floats(size_t n, unsigned seed, float scale) {
  float* v = malloc(n * sizeof(float));
  for (size_t i = 0; i < n; ++i) v[i] = scale * lcg(&seed);
  return v;
}

/* An observer for hook_sae_acts_post: zero one latent in every row. */
static int ablate(void* user, const char* hook, float* z, int64_t rows, int64_t cols, topksae_device device,
                  void* stream) {
  (void)hook;
  (void)stream;
  if (device != TOPKSAE_DEVICE_CPU) return 1;
  const int32_t latent = *(const int32_t*)user;
  for (int64_t b = 0; b < rows; ++b) z[b * cols + latent] = 0.0f;
  return 0;
}

int main(int argc, char** argv) {
  topksae_model* model = NULL;
  if (argc > 1) {
    CHECK(topksae_model_load(argv[1], TOPKSAE_DEVICE_CPU, &model));
  } else {
    const int64_t d_in = 32, d_sae = 200, k = 6;
    float* W_enc = random_floats((size_t)(d_in * d_sae), 1, 0.3f);
    float* b_enc = random_floats((size_t)d_sae, 2, 0.05f);
    float* W_dec = random_floats((size_t)(d_sae * d_in), 3, 0.3f);
    float* b_dec = random_floats((size_t)d_in, 4, 0.05f);
    CHECK(topksae_model_from_weights(d_in, d_sae, k, 1, "none", W_enc, b_enc, W_dec, b_dec, TOPKSAE_DEVICE_CPU, &model));
    free(W_enc), free(b_enc), free(W_dec), free(b_dec);  /* the model holds its own copy */
  }
  topksae_model_info info;
  CHECK(topksae_model_get_info(model, &info));
  printf("topksae %s: d_in=%lld d_sae=%lld k=%lld\n", topksae_version(), (long long)info.d_in, (long long)info.d_sae,
         (long long)info.k);

  const int64_t B = 5, D = info.d_in, K = info.k;
  float* x = random_floats((size_t)(B * D), 7, 2.0f);        /* [B, d_in] */
  int32_t* idx = malloc((size_t)(B * K) * sizeof(int32_t));  /* [B, k] */
  float* val = malloc((size_t)(B * K) * sizeof(float));      /* [B, k] */
  float* xhat = malloc((size_t)(B * D) * sizeof(float));     /* [B, d_in] */
  float* y = malloc((size_t)(B * D) * sizeof(float));        /* [B, d_in] */
  int64_t* indptr = malloc((size_t)(B + 1) * sizeof(int64_t));
  int64_t nnz = 0;

  topksae_workspace* ws = NULL;
  CHECK(topksae_workspace_create(&ws));
  CHECK(topksae_encode_topk(model, ws, NULL, x, B, D, idx, val));
  printf("row 0 latents:");
  for (int64_t i = 0; i < K; ++i) printf(" %d:%.3f", idx[i], val[i]);
  printf("\n");
  CHECK(topksae_encode_csr(model, ws, NULL, x, B, D, indptr, idx, val, B * K, &nnz));
  printf("CSR: %lld non-zeros over %lld rows\n", (long long)nnz, (long long)B);
  CHECK(topksae_decode_csr(model, ws, NULL, indptr, idx, val, B, xhat));

  double err = 0, norm = 0;
  for (int64_t i = 0; i < B * D; ++i) err += (x[i] - xhat[i]) * (x[i] - xhat[i]), norm += x[i] * x[i];
  printf("relative reconstruction error: %.3f\n", sqrt(err / norm));

  /* Steering: forward with the strongest latent of row 0 ablated, with the error term. */
  CHECK(topksae_encode_topk(model, ws, NULL, x, B, D, idx, val));
  int32_t latent = idx[0];
  topksae_hooks* hooks = NULL;
  CHECK(topksae_hooks_create(&hooks));
  CHECK(topksae_hooks_add(hooks, "hook_sae_acts_post", ablate, &latent, NULL));
  topksae_call call;
  memset(&call, 0, sizeof call);
  call.hooks = hooks;
  CHECK(topksae_forward(model, ws, &call, x, B, D, 1, y));
  double moved = 0;
  for (int64_t i = 0; i < B * D; ++i) moved += (y[i] - x[i]) * (y[i] - x[i]);
  printf("ablating latent %d moved the output by %.4f\n", latent, sqrt(moved));

  /* Misuse comes back as a status and a message, never a crash. */
  topksae_status s = topksae_encode_topk(model, ws, NULL, x, B, D + 1, idx, val);
  printf("wrong d_in -> %s: %s\n", topksae_status_name(s), topksae_last_error());
  int ok = s == TOPKSAE_ERROR_INVALID_ARGUMENT && moved > 0;

  topksae_hooks_free(hooks);
  topksae_workspace_free(ws);
  topksae_model_free(model);
  free(x), free(idx), free(val), free(xhat), free(y), free(indptr);
  return ok ? 0 : 1;
}
