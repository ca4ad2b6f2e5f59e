// Links the installed static library and encodes a batch: proves headers, archive and the CMake
// package config work outside the source tree. Exit code 0 only if the results are right.
#include <topksae/device.h>
#include <topksae/ops_cpu.h>

#include <cstdio>

int main() {
  topksae::Sae s;
  s.cfg.d_in = 2;
  s.cfg.d_sae = 3;
  s.cfg.k = 1;
  s.params = topksae::SaeParams::zeros(s.cfg);
  s.params.W_enc = {1, 0, 0, 0, 1, 0};  // latent 0 reads x0, latent 1 reads x1
  s.params.W_dec = {1, 0, 0, 1, 0, 0};
  const float x[2] = {0.5f, 2.0f};
  topksae::cpu::TopKCodes c = topksae::cpu::encode_topk(s, x, 1);
  float out[2];
  topksae::cpu::decode_topk(s, c, out);
  std::printf("consumer: latent %d value %.2f -> [%.2f, %.2f]; cuda built: %d\n", c.indices[0], c.values[0], out[0],
              out[1], int(topksae::built_with_cuda()));
  return (c.indices[0] == 1 && c.values[0] == 2.0f && out[0] == 0.f && out[1] == 2.0f) ? 0 : 1;
}
