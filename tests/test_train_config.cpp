// The TrainConfig field table (src/train/config_fields.cpp): it drives the JSON and the
// `topksae train` flags, so every field is in it once, every field round-trips through both the
// JSON and the command-line text, and bad values are refused naming the key. Also the values
// sae_lens accepts that we used to refuse (dead_feature_window 0).
#include <nlohmann/json.hpp>
#include <set>

#include "test_util.h"
#include "topksae/error.h"
#include "topksae/precision.h"
#include "topksae/synthetic.h"
#include "topksae/train.h"

using namespace topksae;

namespace {

TEST(TrainConfigFields, TheTableIsTheJsonAndEachKeyAndFlagIsUnique) {
  const auto& fields = train_config_fields();
  const nlohmann::ordered_json j = nlohmann::ordered_json::parse(train_config_to_json(TrainConfig{}));
  ASSERT_EQ(j.size(), fields.size());
  size_t i = 0;
  std::set<std::string> keys, flags;
  for (auto it = j.begin(); it != j.end(); ++it, ++i) {
    EXPECT_EQ(it.key(), fields[i].key) << "the JSON follows the table's order";
    EXPECT_EQ(it.value().dump(), train_config_get(TrainConfig{}, fields[i].key));
    EXPECT_TRUE(keys.insert(std::string(fields[i].key)).second) << fields[i].key;
    EXPECT_TRUE(flags.insert(std::string(fields[i].flag)).second) << fields[i].flag;
    EXPECT_EQ(fields[i].flag.substr(0, 2), "--");
    EXPECT_FALSE(fields[i].help.empty()) << fields[i].key;
  }
}

// A config with every field away from its default, set through the command-line text; its JSON
// must read back to the same config, and each field must have moved (so no row is dead).
TEST(TrainConfigFields, EveryFieldRoundTripsThroughTextAndJson) {
  const std::pair<const char*, const char*> text[] = {
      {"d_in", "31"}, {"d_sae", "77"}, {"k", "5"}, {"apply_b_dec_to_input", "false"},
      {"normalize_activations", "expected_average_only_in"}, {"n_batches_for_norm_estimate", "3"},
      {"decoder_init_norm", "none"}, {"aux_loss_coefficient", "0.25"}, {"rescale_acts_by_decoder_norm", "yes"},
      {"lr", "1e-3"}, {"adam_beta1", "0.5"}, {"adam_beta2", "0.75"}, {"lr_scheduler_name", "CosineAnnealing"},
      {"lr_warm_up_steps", "2"}, {"lr_decay_steps", "3"}, {"lr_end", "1e-5"}, {"n_restart_cycles", "2"},
      {"train_batch_size_tokens", "64"}, {"training_tokens", "6400"}, {"dead_feature_window", "0"},
      {"feature_sampling_window", "9"}, {"seed", "18446744073709551615"}};
  ASSERT_EQ(std::size(text), train_config_fields().size());
  const TrainConfig defaults;
  TrainConfig c;
  for (auto [key, value] : text) {
    train_config_set_text(c, key, value);
    EXPECT_NE(train_config_get(c, key), train_config_get(defaults, key)) << key << " did not change";
  }
  EXPECT_EQ(c.batch_size, 64);
  EXPECT_EQ(c.lr_scheduler_name, LrScheduler::cosineannealing);
  EXPECT_FALSE(c.decoder_init_norm.has_value());
  EXPECT_TRUE(c.rescale_acts_by_decoder_norm);
  EXPECT_EQ(c.seed, UINT64_MAX);
  EXPECT_EQ(c.dead_feature_window, 0);
  EXPECT_NO_THROW(c.validate());
  const TrainConfig back = train_config_from_json(train_config_to_json(c));
  EXPECT_EQ(train_config_to_json(back), train_config_to_json(c));
  // And per key through JSON text.
  TrainConfig d;
  for (const TrainConfigField& f : train_config_fields()) train_config_set_json(d, f.key, train_config_get(c, f.key));
  EXPECT_EQ(train_config_to_json(d), train_config_to_json(c));
}

TEST(TrainConfigFields, BadValuesAreRefusedNamingTheKey) {
  TrainConfig c;
  EXPECT_THROW(train_config_set_text(c, "k", "abc"), Error);
  EXPECT_THROW(train_config_set_text(c, "k", "1.5"), Error);
  EXPECT_THROW(train_config_set_text(c, "apply_b_dec_to_input", "maybe"), Error);
  EXPECT_THROW(train_config_set_text(c, "lr", "fast"), Error);
  EXPECT_THROW(train_config_set_text(c, "normalize_activations", "sideways"), Error);
  EXPECT_THROW(train_config_set_text(c, "seed", "-1"), Error);
  EXPECT_THROW(train_config_set_text(c, "learning_rate", "1"), Error);
  EXPECT_EQ(train_config_to_json(c), train_config_to_json(TrainConfig{})) << "a refused value changes nothing";
  try {
    train_config_from_json(R"({"k": "four"})");
    ADD_FAILURE() << "a string k was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'k'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(train_config_from_json(R"({"training_tokens": 1.5})"), Error);
  EXPECT_THROW(train_config_from_json(R"({"apply_b_dec_to_input": 1})"), Error);
  EXPECT_THROW(train_config_from_json(R"({"d_in": 4, "learning_rate": 1})"), Error);
  // Python writes 2e6 for an integer it computed as a float: exact integers are taken.
  EXPECT_EQ(train_config_from_json(R"({"training_tokens": 2e6, "batch_size": 512})").training_tokens, 2000000);
  EXPECT_EQ(train_config_from_json(R"({"batch_size": 512})").batch_size, 512);  // the alias
}

// sae_lens takes dead_feature_window 0 (a latent is then dead when it did not fire in the
// previous step: since_fired > 0); a negative window is still refused.
TEST(TrainConfigFields, DeadFeatureWindowZeroIsAccepted) {
  TrainConfig c;
  c.d_in = 8;
  c.d_sae = 16;
  c.k = 2;
  c.dead_feature_window = 0;
  EXPECT_NO_THROW(c.validate());
  c.dead_feature_window = -1;
  EXPECT_THROW(c.validate(), Error);
}

// The bookkeeping with window 0: dead means since_fired > 0, and a run reports exactly that count
// after each step (and so runs AuxK over the latents that did not fire in the step before).
TEST(TrainConfigFields, DeadFeatureWindowZeroCountsTheLatentsSilentInThePreviousStep) {
  SparsityStats s = SparsityStats::zeros(5);
  s.since_fired = {0, 1, 7, 0, 2};
  uint8_t dead[5];
  EXPECT_EQ(cpu::dead_mask(s, 0, dead), 3);
  EXPECT_EQ(std::vector<uint8_t>(dead, dead + 5), (std::vector<uint8_t>{0, 1, 1, 0, 1}));

  SyntheticConfig sc;
  sc.d_in = 16;
  sc.n_features = 40;
  sc.seed = 3;
  SyntheticSource src(sc);
  TrainConfig c;
  c.d_in = 16;
  c.d_sae = 64;
  c.k = 3;
  c.batch_size = 17;
  c.training_tokens = 17 * 6;
  c.dead_feature_window = 0;
  std::vector<StepMetrics> log;
  TrainerOptions o;
  o.on_step = [&](const StepMetrics& m) { log.push_back(m); };
  Trainer t(c, src, o);
  EXPECT_EQ(t.run(), 6);
  ASSERT_EQ(log.size(), 6u);
  int64_t silent = 0;
  for (int64_t v : t.state().stats.since_fired) silent += v > 0;
  EXPECT_GT(silent, 0);
  EXPECT_EQ(log.back().dead_features, silent);
  EXPECT_EQ(log[0].auxiliary_reconstruction_loss, 0.0) << "no step before the first: nothing is dead";
  EXPECT_GT(log[1].auxiliary_reconstruction_loss, 0.0) << "AuxK runs over the latents silent in step 0";
}

TEST(PrecisionNames, RoundTripAndRefuseOthers) {
  for (auto p : {cuda::Precision::fp32, cuda::Precision::tf32, cuda::Precision::bf16})
    EXPECT_EQ(cuda::precision_from_name(cuda::precision_name(p)), p);
  EXPECT_EQ(cuda::precision_name(cuda::Precision::tf32), "tf32");
  EXPECT_THROW(cuda::precision_from_name("fp16"), Error);
  EXPECT_THROW(cuda::precision_from_name("FP32"), Error);
  for (auto g : {cuda::EncoderGemm::cublas, cuda::EncoderGemm::lt, cuda::EncoderGemm::automatic})
    EXPECT_EQ(cuda::encoder_gemm_from_name(cuda::encoder_gemm_name(g)), g);
  EXPECT_EQ(cuda::encoder_gemm_name(cuda::EncoderGemm::automatic), "auto");
  EXPECT_THROW(cuda::encoder_gemm_from_name("cublaslt"), Error);
}

}  // namespace
