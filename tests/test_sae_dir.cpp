// SAE directories as sae_lens 6.13.1 writes them (fixtures from tests/fixtures/make_fixtures.py),
// refusal of bad directories naming file and problem, and bit-exact round trips.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "formats_fixtures.h"
#include "topksae/atomic_file.h"
#include "topksae/safetensors.h"
#include "topksae/sae_dir.h"

namespace topksae {
namespace {

using test::expect_error;
using test::fixtures;

constexpr int64_t kDIn = 5, kDSae = 7, kK = 3;

std::filesystem::path sd(const std::string& name) { return fixtures("sae") / name; }

// The values make_fixtures.py writes.
SaeParams expected_params() {
  SaeParams p;
  for (int i = 0; i < kDIn; ++i)
    for (int j = 0; j < kDSae; ++j) p.W_enc.push_back(float((i * kDSae + j) % 29) * 0.25f - 3.5f);
  for (int i = 0; i < kDSae; ++i)
    for (int j = 0; j < kDIn; ++j) p.W_dec.push_back(float((i * kDIn + j) % 23) * 0.25f - 2.75f);
  for (int j = 0; j < kDSae; ++j) p.b_enc.push_back(0.25f * float(j) - 0.5f);
  for (int i = 0; i < kDIn; ++i) p.b_dec.push_back(0.5f * float(i) - 1.f);
  return p;
}

void expect_params_eq(const SaeParams& a, const SaeParams& b) {
  EXPECT_EQ(a.W_enc, b.W_enc);
  EXPECT_EQ(a.W_dec, b.W_dec);
  EXPECT_EQ(a.b_enc, b.b_enc);
  EXPECT_EQ(a.b_dec, b.b_dec);
}

TEST(SaeDir, LoadsSaeLensDirectoryInEachDtype) {
  const SaeParams want = expected_params();
  for (auto [name, dtype] : {std::pair{"f32", DType::f32}, {"f16", DType::f16}, {"bf16", DType::bf16}}) {
    SCOPED_TRACE(name);
    SaeDirExtras ex;
    Sae s = load_sae_dir(sd(name), &ex);
    EXPECT_EQ(s.cfg.d_in, kDIn);
    EXPECT_EQ(s.cfg.d_sae, kDSae);
    EXPECT_EQ(s.cfg.k, kK);
    EXPECT_EQ(s.cfg.dtype, dtype);
    EXPECT_TRUE(s.cfg.apply_b_dec_to_input);
    EXPECT_EQ(s.cfg.normalize, Normalize::none);
    expect_params_eq(s.params, want);
    EXPECT_EQ(ex.metadata_json.at("model_name"), "\"gpt2\"");
    EXPECT_EQ(ex.metadata_json.at("context_size"), "128");
    EXPECT_EQ(ex.metadata_json.at("hook_head_index"), "null");
    EXPECT_TRUE(ex.training_json.empty());
    EXPECT_FALSE(ex.scaling_factor.has_value());
    EXPECT_EQ(ex.sparsity.has_value(), std::string(name) == "f32");
  }
  SaeDirExtras ex;
  load_sae_dir(sd("f32"), &ex);
  ASSERT_TRUE(ex.sparsity);
  EXPECT_EQ((*ex.sparsity)[3], -2.5f);
}

TEST(SaeDir, AcceptsWhatSaeLensWrites) {
  Sae ln = load_sae_dir(sd("layer_norm"));  // layer_norm, unknown keys, a scaling_factor of ones
  EXPECT_EQ(ln.cfg.normalize, Normalize::layer_norm);
  expect_params_eq(ln.params, expected_params());

  SaeDirExtras ex;
  Sae ck = load_sae_dir(sd("checkpoint"), &ex);
  EXPECT_EQ(ck.cfg.normalize, Normalize::expected_average_only_in);
  EXPECT_EQ(ex.training_json.at("decoder_init_norm"), "0.1");
  EXPECT_EQ(ex.training_json.at("use_sparse_activations"), "false");
  EXPECT_EQ(ex.training_json.at("aux_loss_coefficient"), "1.0");
  ASSERT_TRUE(ex.scaling_factor);
  EXPECT_EQ(*ex.scaling_factor, 2.5f);

  Sae old = load_sae_dir(sd("pre6_topk"));  // pre-6.0 config: activation_fn_str "topk"
  EXPECT_EQ(old.cfg.k, kK);
}

struct BadCase {
  const char* dir;
  const char* file;
  std::vector<std::string> parts;
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.dir; }

class SaeDirMalformed : public ::testing::TestWithParam<BadCase> {};

TEST_P(SaeDirMalformed, IsRefusedWithAClearMessage) {
  std::vector<std::string> parts = GetParam().parts;
  parts.push_back(std::string(GetParam().dir) + "/" + GetParam().file);
  expect_error([&] { load_sae_dir(sd(GetParam().dir)); }, parts);
}

INSTANTIATE_TEST_SUITE_P(
    Dirs, SaeDirMalformed,
    ::testing::Values(BadCase{"missing_field", "cfg.json", {"missing required field \"d_sae\""}},
                      BadCase{"wrong_arch", "cfg.json", {"architecture \"jumprelu\"", "topk"}},
                      BadCase{"shape_mismatch", "sae_weights.safetensors", {"'W_enc'", "[5, 7]", "cfg.json implies [6, 7]"}},
                      BadCase{"extra_tensor", "sae_weights.safetensors", {"unexpected tensor 'threshold'"}},
                      BadCase{"missing_tensor", "sae_weights.safetensors", {"missing tensor 'b_dec'"}},
                      BadCase{"scaling_not_one", "sae_weights.safetensors", {"scaling_factor", "not all ones"}},
                      BadCase{"bad_k", "cfg.json", {"k must be in [1, d_sae=7], got 8"}},
                      BadCase{"int_weights", "sae_weights.safetensors", {"'W_dec'", "i32"}},
                      BadCase{"no_cfg", "cfg.json", {"no such file"}},
                      BadCase{"bad_cfg_json", "cfg.json", {"not valid JSON"}}),
    [](const ::testing::TestParamInfo<BadCase>& i) { return std::string(i.param.dir); });

TEST(SaeDir, CfgParserNamesBadFields) {
  expect_error([] { parse_sae_cfg_json(R"({"architecture": "topk", "d_in": "5", "d_sae": 7, "k": 3})", "c.json"); },
               {"c.json", "\"d_in\"", "integer"});
  expect_error([] { parse_sae_cfg_json(R"({"architecture": "topk", "d_in": 5, "d_sae": 7, "k": 3, "dtype": "int8"})", "c.json"); },
               {"c.json", "dtype", "int8"});
  expect_error([] { parse_sae_cfg_json(R"({"architecture": "topk", "d_in": 5, "d_sae": 7, "k": 3, "normalize_activations": "zscore"})", "c.json"); },
               {"c.json", "zscore"});
  expect_error([] { parse_sae_cfg_json(R"({"architecture": 3, "d_in": 5, "d_sae": 7, "k": 3})", "c.json"); },
               {"c.json", "\"architecture\"", "string"});
  expect_error([] { parse_sae_cfg_json("[]", "c.json"); }, {"c.json", "JSON object"});
}

Sae random_sae(DType dtype, uint32_t seed) {
  Sae s;
  s.cfg.d_in = 13;
  s.cfg.d_sae = 37;
  s.cfg.k = 4;
  s.cfg.dtype = dtype;
  s.cfg.normalize = Normalize::constant_norm_rescale;
  s.cfg.apply_b_dec_to_input = false;
  s.params = SaeParams::zeros(s.cfg);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  // Values representable in the storage dtype, so that save -> load is exact.
  auto fill = [&](std::vector<float>& v) {
    for (auto& x : v) {
      float f = nd(rng);
      if (dtype == DType::f16) f = f16_to_f32(f32_to_f16(f));
      if (dtype == DType::bf16) f = bf16_to_f32(f32_to_bf16(f));
      x = f;
    }
  };
  fill(s.params.W_enc);
  fill(s.params.W_dec);
  fill(s.params.b_enc);
  fill(s.params.b_dec);
  return s;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

TEST(SaeDir, RoundTripIsBitExactInEachDtype) {
  for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
    SCOPED_TRACE(std::string(dtype_name(dt)));
    Sae s = random_sae(dt, 11);
    SaeDirExtras ex;
    ex.metadata_json["model_name"] = "\"pythia-70m\"";
    ex.metadata_json["context_size"] = "1024";
    ex.sparsity = std::vector<float>(37, -3.25f);
    auto dir = fixtures() / ("rt_" + std::string(dtype_name(dt)));
    save_sae_dir(dir, s, ex);
    SaeDirExtras back;
    Sae t = load_sae_dir(dir, &back);
    EXPECT_EQ(t.cfg.d_in, 13);
    EXPECT_EQ(t.cfg.d_sae, 37);
    EXPECT_EQ(t.cfg.k, 4);
    EXPECT_EQ(t.cfg.dtype, dt);
    EXPECT_EQ(t.cfg.normalize, Normalize::constant_norm_rescale);
    EXPECT_FALSE(t.cfg.apply_b_dec_to_input);
    EXPECT_TRUE(same_bits(t.params.W_enc, s.params.W_enc));
    EXPECT_TRUE(same_bits(t.params.W_dec, s.params.W_dec));
    EXPECT_TRUE(same_bits(t.params.b_enc, s.params.b_enc));
    EXPECT_TRUE(same_bits(t.params.b_dec, s.params.b_dec));
    float norm = 0;
    for (float v : t.params.W_enc) norm += std::fabs(v);
    EXPECT_GT(norm, 0.f);
    EXPECT_EQ(back.metadata_json.at("model_name"), "\"pythia-70m\"");
    EXPECT_EQ(back.metadata_json.at("sae_lens_version"), "\"6.13.1\"");
    EXPECT_EQ(back.metadata_json.at("hook_name"), "null");
    ASSERT_TRUE(back.sparsity);
    EXPECT_EQ(*back.sparsity, *ex.sparsity);
    // weights stored in cfg.dtype, as sae_lens does
    SafetensorsFile w = SafetensorsFile::open(dir / kSaeWeightsFile);
    EXPECT_EQ(w.at("W_enc").dtype, dt);
    // the stored bytes survive load -> save unchanged
    std::vector<uint8_t> before(static_cast<const uint8_t*>(w.at("W_dec").data),
                                static_cast<const uint8_t*>(w.at("W_dec").data) + w.at("W_dec").nbytes);
    auto dir2 = fixtures() / ("rt2_" + std::string(dtype_name(dt)));
    save_sae_dir(dir2, t, back);
    SafetensorsFile w2 = SafetensorsFile::open(dir2 / kSaeWeightsFile);
    ASSERT_EQ(w2.at("W_dec").nbytes, before.size());
    EXPECT_EQ(std::memcmp(w2.at("W_dec").data, before.data(), before.size()), 0);
  }
}

TEST(SaeDir, PythonWrittenHalfPrecisionWeightsResaveBitExact) {
  for (const char* name : {"f16", "bf16"}) {
    SCOPED_TRACE(name);
    SaeDirExtras ex;
    Sae s = load_sae_dir(sd(name), &ex);
    auto out = fixtures() / (std::string("resave_") + name);
    save_sae_dir(out, s, ex);
    SafetensorsFile a = SafetensorsFile::open(sd(name) / kSaeWeightsFile);
    SafetensorsFile b = SafetensorsFile::open(out / kSaeWeightsFile);
    for (const char* t : {"W_enc", "W_dec", "b_enc", "b_dec"}) {
      ASSERT_EQ(a.at(t).nbytes, b.at(t).nbytes) << t;
      EXPECT_EQ(a.at(t).dtype, b.at(t).dtype) << t;
      EXPECT_EQ(std::memcmp(a.at(t).data, b.at(t).data, a.at(t).nbytes), 0) << t;
    }
  }
}

TEST(SaeDir, CheckpointWritesTrainingKeysAndScaler) {
  Sae s = random_sae(DType::f32, 2);
  s.cfg.normalize = Normalize::expected_average_only_in;
  SaeDirExtras ex;
  ex.training_json["decoder_init_norm"] = "0.1";
  ex.training_json["use_sparse_activations"] = "false";
  ex.training_json["aux_loss_coefficient"] = "0.03125";
  ex.scaling_factor = 1.75f;
  auto dir = fixtures() / "ckpt";
  save_sae_dir(dir, s, ex);
  auto cfg = nlohmann::json::parse(read_small_file(dir / kSaeCfgFile));
  EXPECT_EQ(cfg["architecture"], "topk");
  EXPECT_EQ(cfg["normalize_activations"], "expected_average_only_in");
  EXPECT_EQ(cfg["aux_loss_coefficient"], 0.03125);
  EXPECT_EQ(cfg["metadata"]["sae_lens_version"], "6.13.1");
  EXPECT_EQ(cfg["reshape_activations"], "none");
  SaeDirExtras back;
  load_sae_dir(dir, &back);
  ASSERT_TRUE(back.scaling_factor);
  EXPECT_EQ(*back.scaling_factor, 1.75f);
  EXPECT_EQ(back.training_json, ex.training_json);

  // Saving the folded inference model over it removes the scaler (it described other weights).
  save_sae_dir(dir, s);
  EXPECT_FALSE(std::filesystem::exists(dir / kActivationScalerFile));
  EXPECT_FALSE(std::filesystem::exists(dir / kSaeSparsityFile));
}

}  // namespace
}  // namespace topksae
