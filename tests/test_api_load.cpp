// Model::load and topksae_model_load on an SAE directory written by save_sae_dir: the loaded
// model encodes as the in-memory one does, and a missing directory is an error, not a crash.
#include <stdlib.h>

#include <filesystem>

#include "test_util.h"
#include "topksae/api.h"
#include "topksae/sae_dir.h"
#include "topksae/topksae_c.h"

using namespace topksae;
using namespace topksae::test;

TEST(ApiLoad, LoadedDirectoryEncodesAsTheInMemoryModel) {
  char templ[] = "/tmp/topksae_api_load_XXXXXX";
  ASSERT_NE(::mkdtemp(templ), nullptr);
  const std::filesystem::path dir = templ;
  const int64_t d_in = 21, d_sae = 90, k = 4, B = 6;
  Sae sae = random_sae(d_in, d_sae, k, 91);
  save_sae_dir(dir, sae);

  auto loaded = Model::load(dir);
  auto in_memory = Model::from_sae(sae);
  auto x = randn(size_t(B * d_in), 92, 2.f);
  std::vector<int32_t> idx(size_t(B * k)), want_idx(size_t(B * k));
  std::vector<float> val(size_t(B * k)), want_val(size_t(B * k));
  Workspace ws;
  loaded->encode_topk(ws, {x.data(), B, d_in}, {idx.data(), B, k}, {val.data(), B, k});
  in_memory->encode_topk(ws, {x.data(), B, d_in}, {want_idx.data(), B, k}, {want_val.data(), B, k});
  EXPECT_EQ(idx, want_idx);
  EXPECT_EQ(val, want_val);
  EXPECT_NONZERO(val);

  topksae_model* m = nullptr;
  ASSERT_EQ(topksae_model_load(dir.c_str(), TOPKSAE_DEVICE_CPU, &m), TOPKSAE_OK) << topksae_last_error();
  std::fill(idx.begin(), idx.end(), -1);
  ASSERT_EQ(topksae_encode_topk(m, nullptr, nullptr, x.data(), B, d_in, idx.data(), val.data()), TOPKSAE_OK);
  EXPECT_EQ(idx, want_idx);
  topksae_model_free(m);

  m = reinterpret_cast<topksae_model*>(0x1);
  EXPECT_EQ(topksae_model_load((dir / "missing").c_str(), TOPKSAE_DEVICE_CPU, &m), TOPKSAE_ERROR);
  EXPECT_NE(std::string(topksae_last_error()).find("missing"), std::string::npos) << topksae_last_error();
  EXPECT_EQ(m, nullptr);
  EXPECT_EQ(topksae_model_load(nullptr, TOPKSAE_DEVICE_CPU, &m), TOPKSAE_ERROR_INVALID_ARGUMENT);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}
