// The topksae side of the sae_lens interop checks (tests/interop/*.py): small subcommands that read
// and write safetensors / npy / JSON so that Python can drive the library and compare numbers.
//
//   interop_tool encode SAE_DIR X.npy OUT.safetensors      top-k codes, dense z, forward output
//   interop_tool train-save CONFIG.json X.npy OUT_DIR      Trainer over X, then save_final
//   interop_tool train-steps IN.safetensors OUT.safetensors  cpu::train_step from given weights
//   interop_tool lr CONFIG.json STEPS                      cpu::lr_at per step, JSON array on stdout
//   interop_tool dataset-rows DATA TENSOR OUT.npy          every row of a FileDataset as f32 [rows, d_in]
//                                                          (TENSOR "" = the default); describe() on stdout
//
// CONFIG.json uses the TrainConfig field names (tests/interop/common.py writes them).
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "topksae/error.h"
#include "topksae/file_source.h"
#include "topksae/npy.h"
#include "topksae/ops_cpu.h"
#include "topksae/sae_dir.h"
#include "topksae/safetensors.h"
#ifdef TOPKSAE_INTEROP_TRAIN
#include "topksae/atomic_file.h"
#include "topksae/train.h"
#endif

using namespace topksae;
using nlohmann::json;

namespace {

int cmd_encode(const std::string& dir, const std::string& x_path, const std::string& out) {
  Sae sae = load_sae_dir(dir);
  NpyFile xf = NpyFile::open(x_path);
  const ArrayView& xa = xf.array();
  TOPKSAE_CHECK(xa.cols() == sae.cfg.d_in, x_path, ": rows of ", xa.cols(), ", SAE d_in ", sae.cfg.d_in);
  const int64_t B = xa.rows();
  std::vector<float> x = xa.to_f32();                        // [B, d_in]
  cpu::TopKCodes codes = cpu::encode_topk(sae, x.data(), B);  // [B, k] pairs
  std::vector<float> z = cpu::topk_to_dense(codes);          // [B, d_sae]
  std::vector<float> xhat(x.size());                         // [B, d_in]
  cpu::forward(sae, x.data(), B, xhat.data());
  SafetensorsWriter w;
  w.add("indices", DType::i32, {B, sae.cfg.k}, codes.indices.data());
  w.add_f32("values", {B, sae.cfg.k}, codes.values.data());
  w.add_f32("z", {B, sae.cfg.d_sae}, z.data());
  w.add_f32("xhat", {B, sae.cfg.d_in}, xhat.data());
  w.write(out);
  return 0;
}

int cmd_dataset_rows(const std::string& data, const std::string& tensor, const std::string& out) {
  auto ds = FileDataset::open(data, tensor);
  std::vector<float> x(static_cast<size_t>(ds->rows() * ds->d_in()));  // [rows, d_in]
  ds->read_rows(0, ds->rows(), x.data());
  write_npy(out, DType::f32, {ds->rows(), ds->d_in()}, x.data());
  std::cout << ds->describe() << "\n";
  return 0;
}

#ifdef TOPKSAE_INTEROP_TRAIN
TrainConfig config_from(const json& j) {
  TrainConfig c;
  c.d_in = j.at("d_in");
  c.d_sae = j.at("d_sae");
  c.k = j.at("k");
  c.lr = j.value("lr", c.lr);
  c.adam_beta1 = j.value("adam_beta1", c.adam_beta1);
  c.adam_beta2 = j.value("adam_beta2", c.adam_beta2);
  c.lr_scheduler_name = lr_scheduler_from_name(j.value("lr_scheduler_name", std::string("constant")));
  c.lr_warm_up_steps = j.value("lr_warm_up_steps", c.lr_warm_up_steps);
  c.lr_decay_steps = j.value("lr_decay_steps", c.lr_decay_steps);
  if (j.contains("lr_end") && !j["lr_end"].is_null()) c.lr_end = j["lr_end"].get<double>();
  c.n_restart_cycles = j.value("n_restart_cycles", c.n_restart_cycles);
  c.batch_size = j.value("batch_size", c.batch_size);
  c.training_tokens = j.value("training_tokens", c.training_tokens);
  c.dead_feature_window = j.value("dead_feature_window", c.dead_feature_window);
  c.feature_sampling_window = j.value("feature_sampling_window", c.feature_sampling_window);
  c.aux_loss_coefficient = j.value("aux_loss_coefficient", c.aux_loss_coefficient);
  c.apply_b_dec_to_input = j.value("apply_b_dec_to_input", c.apply_b_dec_to_input);
  c.normalize_activations = normalize_from_name(j.value("normalize_activations", std::string("none")));
  c.n_batches_for_norm_estimate = j.value("n_batches_for_norm_estimate", c.n_batches_for_norm_estimate);
  c.seed = j.value("seed", c.seed);
  return c;
}

json read_json(const std::string& path) { return json::parse(read_small_file(path)); }

// Rows of one in-memory array, in order, once; enough for Trainer.
class ArraySource : public ActivationSource {
 public:
  ArraySource(std::vector<float> x, int64_t d_in) : x_(std::move(x)), d_in_(d_in) {}
  int64_t d_in() const override { return d_in_; }
  int64_t next(float* out, int64_t rows) override {
    const int64_t total = static_cast<int64_t>(x_.size()) / d_in_;
    const int64_t n = std::min(rows, total - pos_);
    std::memcpy(out, x_.data() + pos_ * d_in_, size_t(n * d_in_) * sizeof(float));
    pos_ += n;
    return n;
  }
  std::string position() const override { return std::to_string(pos_); }
  void seek(const std::string& p) override { pos_ = std::stoll(p); }
  std::string describe() const override { return "interop array"; }

 private:
  std::vector<float> x_;
  int64_t d_in_, pos_ = 0;
};

int cmd_train_save(const std::string& cfg_path, const std::string& x_path, const std::string& out_dir) {
  TrainConfig cfg = config_from(read_json(cfg_path));
  NpyFile xf = NpyFile::open(x_path);
  ArraySource src(xf.array().to_f32(), cfg.d_in);
  Trainer t(cfg, src);
  const int64_t steps = t.run();
  t.save_final(out_dir);
  std::cout << "trained " << steps << " steps, saved " << out_dir << "\n";
  return 0;
}

// IN: W_enc, b_enc, W_dec, b_dec (f32), x [S, B, d_in] (f32), since_fired [d_sae] (i64), and
// __metadata__ "config" (CONFIG.json text) and optionally "scaling_factor".
// OUT, per step s (stacked on a leading [S] axis): losses, grad_norm, lr_used, n_dead, the four
// clipped gradients ("grad.<name>") and the parameters after the step ("<name>").
int cmd_train_steps(const std::string& in, const std::string& out) {
  SafetensorsFile f = SafetensorsFile::open(in);
  TrainConfig cfg = config_from(json::parse(f.metadata().at("config")));
  TrainState st = TrainState::initial(cfg);
  st.params.W_enc = f.read_f32("W_enc");
  st.params.b_enc = f.read_f32("b_enc");
  st.params.W_dec = f.read_f32("W_dec");
  st.params.b_dec = f.read_f32("b_dec");
  if (f.metadata().count("scaling_factor")) st.scaling_factor = std::stod(f.metadata().at("scaling_factor"));
  const ArrayView& sf = f.at("since_fired");
  TOPKSAE_CHECK(sf.dtype == DType::i64 && sf.numel() == cfg.d_sae, in, ": since_fired must be i64 [d_sae]");
  std::memcpy(st.stats.since_fired.data(), sf.data, size_t(cfg.d_sae) * 8);
  const ArrayView& xa = f.at("x");
  TOPKSAE_CHECK(xa.shape.size() == 3 && xa.shape[2] == cfg.d_in, in, ": x must be [S, B, d_in]");
  const int64_t S = xa.shape[0], B = xa.shape[1];
  std::vector<float> x = xa.to_f32();

  std::vector<double> loss, mse, aux, gnorm, lr;
  std::vector<int64_t> n_dead;
  Params<float> grads, params;  // stacked [S * size]
  auto append = [](Params<float>& dst, const Params<float>& p) {
    dst.W_enc.insert(dst.W_enc.end(), p.W_enc.begin(), p.W_enc.end());
    dst.b_enc.insert(dst.b_enc.end(), p.b_enc.begin(), p.b_enc.end());
    dst.W_dec.insert(dst.W_dec.end(), p.W_dec.begin(), p.W_dec.end());
    dst.b_dec.insert(dst.b_dec.end(), p.b_dec.begin(), p.b_dec.end());
  };
  cpu::TrainWorkspace ws;
  for (int64_t s = 0; s < S; ++s) {
    StepMetrics m = cpu::train_step(cfg, &st, x.data() + s * B * cfg.d_in, B, &ws);
    loss.push_back(m.overall_loss);
    mse.push_back(m.mse_loss);
    aux.push_back(m.auxiliary_reconstruction_loss);
    gnorm.push_back(m.grad_norm);
    lr.push_back(m.lr_used);
    n_dead.push_back(ws.fwd.n_dead);
    append(grads, ws.grad);
    append(params, st.params);
  }
  SafetensorsWriter w;
  w.add("overall_loss", DType::f64, {S}, loss.data());
  w.add("mse_loss", DType::f64, {S}, mse.data());
  w.add("aux_loss", DType::f64, {S}, aux.data());
  w.add("grad_norm", DType::f64, {S}, gnorm.data());
  w.add("lr_used", DType::f64, {S}, lr.data());
  w.add("n_dead", DType::i64, {S}, n_dead.data());
  const int64_t d = cfg.d_in, n = cfg.d_sae;
  w.add_f32("grad.W_enc", {S, d, n}, grads.W_enc.data());
  w.add_f32("grad.b_enc", {S, n}, grads.b_enc.data());
  w.add_f32("grad.W_dec", {S, n, d}, grads.W_dec.data());
  w.add_f32("grad.b_dec", {S, d}, grads.b_dec.data());
  w.add_f32("W_enc", {S, d, n}, params.W_enc.data());
  w.add_f32("b_enc", {S, n}, params.b_enc.data());
  w.add_f32("W_dec", {S, n, d}, params.W_dec.data());
  w.add_f32("b_dec", {S, d}, params.b_dec.data());
  w.write(out);
  return 0;
}

int cmd_lr(const std::string& cfg_path, int64_t steps) {
  TrainConfig cfg = config_from(read_json(cfg_path));
  cfg.validate();
  json out = json::array();
  for (int64_t t = 0; t < steps; ++t) out.push_back(cpu::lr_at(cfg, t));
  std::cout << out.dump() << "\n";
  return 0;
}
#endif

int usage() {
  std::cerr << "usage: interop_tool encode SAE_DIR X.npy OUT.safetensors\n"
               "       interop_tool train-save CONFIG.json X.npy OUT_DIR\n"
               "       interop_tool train-steps IN.safetensors OUT.safetensors\n"
               "       interop_tool lr CONFIG.json STEPS\n"
               "       interop_tool dataset-rows DATA TENSOR OUT.npy\n";
  return 64;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> a(argv + 1, argv + argc);
  try {
    if (a.size() == 4 && a[0] == "encode") return cmd_encode(a[1], a[2], a[3]);
    if (a.size() == 4 && a[0] == "dataset-rows") return cmd_dataset_rows(a[1], a[2], a[3]);
#ifdef TOPKSAE_INTEROP_TRAIN
    if (a.size() == 4 && a[0] == "train-save") return cmd_train_save(a[1], a[2], a[3]);
    if (a.size() == 3 && a[0] == "train-steps") return cmd_train_steps(a[1], a[2]);
    if (a.size() == 3 && a[0] == "lr") return cmd_lr(a[1], std::stoll(a[2]));
#else
    if (!a.empty() && (a[0] == "train-save" || a[0] == "train-steps" || a[0] == "lr")) {
      std::cerr << "interop_tool: built without the training library (src/train/ absent)\n";
      return 77;
    }
#endif
    return usage();
  } catch (const std::exception& e) {
    std::cerr << "interop_tool: error: " << e.what() << "\n";
    return 1;
  }
}
