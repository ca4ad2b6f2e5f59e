// The training forward and the hand-derived sparse backward, in double, against an independent
// dense reference: losses at the base point, and all four parameter gradients against central
// finite differences of the reference loss (with the AuxK residual held fixed, as sae_lens's
// .detach() does), with AuxK active and with a latent deliberately in both S_b and T_b.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "test_util.h"
#include "topksae/train.h"

using namespace topksae;
using namespace topksae::test;

namespace {

std::vector<double> randn_d(size_t n, uint64_t seed, double scale) {
  auto f = randn(n, seed, float(scale));
  return std::vector<double>(f.begin(), f.end());
}

Params<double> random_params(int64_t d, int64_t n, uint64_t seed) {
  Params<double> p;
  p.W_enc = randn_d(size_t(d * n), seed + 1, 0.4);
  p.b_enc = randn_d(size_t(n), seed + 2, 0.1);
  p.W_dec = randn_d(size_t(n * d), seed + 3, 0.4);
  p.b_dec = randn_d(size_t(d), seed + 4, 0.2);
  return p;
}

// Dense reference of MATH.md's training loss. r_fixed [B, d] (when non-null) replaces the AuxK
// residual (stop-gradient); r_out receives xs - xhat.
double ref_loss(const TrainConfig& cfg, const Params<double>& p, const std::vector<double>& x, int64_t B, double s,
                const std::vector<uint8_t>& dead, const std::vector<double>* r_fixed, std::vector<double>* r_out,
                double* mse_out = nullptr, double* aux_out = nullptr) {
  const int64_t d = cfg.d_in, n = cfg.d_sae, k = cfg.k;
  const double a = cfg.apply_b_dec_to_input ? 1.0 : 0.0;
  int64_t n_dead = 0;
  for (uint8_t v : dead) n_dead += v;
  double mse = 0, aux = 0;
  if (r_out) r_out->assign(size_t(B * d), 0.0);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> xs(static_cast<size_t>(d)), h(static_cast<size_t>(n));
    for (int64_t i = 0; i < d; ++i) xs[size_t(i)] = s * x[size_t(b * d + i)];
    for (int64_t j = 0; j < n; ++j) {
      double acc = p.b_enc[size_t(j)];
      for (int64_t i = 0; i < d; ++i) acc += (xs[size_t(i)] - a * p.b_dec[size_t(i)]) * p.W_enc[size_t(i * n + j)];
      h[size_t(j)] = acc;
    }
    std::vector<int> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int u, int v) { return h[size_t(u)] > h[size_t(v)]; });
    std::vector<double> xhat(p.b_dec);
    for (int64_t sl = 0; sl < k; ++sl) {
      const int j = order[size_t(sl)];
      const double z = std::max(h[size_t(j)], 0.0);
      for (int64_t i = 0; i < d; ++i) xhat[size_t(i)] += z * p.W_dec[size_t(j * d + i)];
    }
    std::vector<double> r(static_cast<size_t>(d));
    for (int64_t i = 0; i < d; ++i) {
      const double e = xhat[size_t(i)] - xs[size_t(i)];
      mse += e * e;
      r[size_t(i)] = xs[size_t(i)] - xhat[size_t(i)];
      if (r_out) (*r_out)[size_t(b * d + i)] = r[size_t(i)];
      if (r_fixed) r[size_t(i)] = (*r_fixed)[size_t(b * d + i)];
    }
    if (n_dead > 0) {
      const int64_t k_aux = std::min<int64_t>(d / 2, n_dead);
      std::vector<int> dord;
      for (int j : order)
        if (dead[size_t(j)]) dord.push_back(j);  // dead latents by h descending
      std::vector<double> ehat(p.b_dec);
      for (int64_t sl = 0; sl < k_aux; ++sl) {
        const int j = dord[size_t(sl)];
        for (int64_t i = 0; i < d; ++i) ehat[size_t(i)] += h[size_t(j)] * p.W_dec[size_t(j * d + i)];
      }
      for (int64_t i = 0; i < d; ++i) aux += (ehat[size_t(i)] - r[size_t(i)]) * (ehat[size_t(i)] - r[size_t(i)]);
    }
  }
  mse /= double(B);
  const double scale = n_dead > 0 ? std::min(double(n_dead) / double(d / 2), 1.0) : 0.0;
  aux = cfg.aux_loss_coefficient * scale * aux / double(B);
  if (mse_out) *mse_out = mse;
  if (aux_out) *aux_out = aux;
  return mse + aux;
}

struct Case {
  int64_t d_in, d_sae, k, B;
  int n_extra_dead;  // dead latents besides the one forced into both sets
  bool apply_b_dec;
  double scaling, aux_coef;
  uint64_t seed;
};

void check_gradients(const Case& c) {
  SCOPED_TRACE(::testing::Message() << "d_in " << c.d_in << " d_sae " << c.d_sae << " k " << c.k << " B " << c.B
                                    << " extra dead " << c.n_extra_dead);
  TrainConfig cfg;
  cfg.d_in = c.d_in;
  cfg.d_sae = c.d_sae;
  cfg.k = c.k;
  cfg.apply_b_dec_to_input = c.apply_b_dec;
  cfg.aux_loss_coefficient = c.aux_coef;
  const int64_t d = c.d_in, n = c.d_sae, B = c.B;
  Params<double> p = random_params(d, n, c.seed);
  std::vector<double> x = randn_d(size_t(B * d), c.seed + 9, 1.0);

  // Pick the latent ranked first for token 1 and mark it dead, plus the n_extra_dead latents
  // with the lowest pre-activations for token 1: then it is the top dead latent of token 1,
  // so it lies in both S_1 and T_1.
  TrainForward<double> f;
  cpu::train_forward(cfg, p, x.data(), B, c.scaling, nullptr, &f);
  const int32_t both = f.idx[size_t(1 * c.k + 0)];
  ASSERT_GT(f.z[size_t(1 * c.k)], 0.0) << "test setup: latent must fire in token 1";
  std::vector<uint8_t> dead(static_cast<size_t>(n), 0);
  dead[size_t(both)] = 1;
  {
    std::vector<int> ord(static_cast<size_t>(n));
    std::iota(ord.begin(), ord.end(), 0);
    const double* h1 = f.h.data() + 1 * n;
    std::sort(ord.begin(), ord.end(), [&](int u, int v) { return h1[u] < h1[v]; });
    for (int i = 0, added = 0; added < c.n_extra_dead; ++i)
      if (ord[size_t(i)] != both) dead[size_t(ord[size_t(i)])] = 1, ++added;
  }
  cpu::train_forward(cfg, p, x.data(), B, c.scaling, dead.data(), &f);
  ASSERT_GT(f.k_aux, 0);
  bool in_both = false;
  for (int64_t sl = 0; sl < f.k_aux; ++sl) in_both |= f.aux_idx[size_t(1 * f.k_aux + sl)] == both;
  ASSERT_TRUE(in_both) << "latent " << both << " should be in both the top-k and the AuxK set of token 1";

  // Losses against the dense reference.
  std::vector<double> r0;
  double mse_ref, aux_ref;
  ref_loss(cfg, p, x, B, c.scaling, dead, nullptr, &r0, &mse_ref, &aux_ref);
  EXPECT_NEAR(f.mse_loss, mse_ref, 1e-12 * (1 + mse_ref));
  EXPECT_NEAR(f.aux_loss, aux_ref, 1e-12 * (1 + aux_ref));
  EXPECT_GT(f.aux_loss, 0.0);
  EXPECT_GT(f.mse_loss, 0.0);

  Params<double> g;
  cpu::train_backward(cfg, p, f, &g);

  // Central differences of the reference loss with the AuxK residual frozen at r0.
  const double eps = 1e-6;
  auto fd_check = [&](std::vector<double>& param, const std::vector<double>& grad, const char* name) {
    SCOPED_TRACE(name);
    ASSERT_EQ(param.size(), grad.size());
    double worst = 0, gnorm = 0;
    for (size_t i = 0; i < param.size(); ++i) {
      const double keep = param[i];
      param[i] = keep + eps;
      const double lp = ref_loss(cfg, p, x, B, c.scaling, dead, &r0, nullptr);
      param[i] = keep - eps;
      const double lm = ref_loss(cfg, p, x, B, c.scaling, dead, &r0, nullptr);
      param[i] = keep;
      const double num = (lp - lm) / (2 * eps);
      worst = std::max(worst, std::abs(num - grad[i]) / (1e-6 + 1e-5 * std::abs(num)));
      gnorm += grad[i] * grad[i];
    }
    EXPECT_LE(worst, 1.0) << name << ": analytic and numeric gradients differ";
    EXPECT_GT(gnorm, 0.0) << name << " gradient is all zero";
  };
  fd_check(p.W_enc, g.W_enc, "W_enc");
  fd_check(p.b_enc, g.b_enc, "b_enc");
  fd_check(p.W_dec, g.W_dec, "W_dec");
  fd_check(p.b_dec, g.b_dec, "b_dec");

  // The latent in both sets gets both contributions: its W_dec row gradient differs from what
  // the top-k term alone gives.
  TrainForward<double> f_noaux;
  cpu::train_forward(cfg, p, x.data(), B, c.scaling, nullptr, &f_noaux);
  Params<double> g_noaux;
  cpu::train_backward(cfg, p, f_noaux, &g_noaux);
  double diff = 0;
  for (int64_t i = 0; i < d; ++i) diff += std::abs(g.W_dec[size_t(both * d + i)] - g_noaux.W_dec[size_t(both * d + i)]);
  EXPECT_GT(diff, 1e-9);
}

}  // namespace

TEST(TrainGrad, FiniteDifferencesAuxKFullScale) {
  // 9 dead latents > k_aux = 4: scale 1; scaled input, coefficient != 1.
  check_gradients({9, 23, 3, 6, 8, true, 1.3, 0.7, 11});
}

TEST(TrainGrad, FiniteDifferencesAuxKPartialScale) {
  // 2 dead latents < d_in // 2 = 5: k_aux = 2, scale 2/5.
  check_gradients({11, 17, 4, 5, 1, true, 1.0, 1.0, 23});
}

TEST(TrainGrad, FiniteDifferencesWithoutBDecOnInput) {
  check_gradients({8, 21, 5, 7, 5, false, 0.8, 1.0, 37});
}

TEST(TrainGrad, FloatPathMatchesDouble) {
  TrainConfig cfg;
  cfg.d_in = 13;
  cfg.d_sae = 45;
  cfg.k = 4;
  const int64_t d = 13, n = 45, B = 19;
  Params<double> pd = random_params(d, n, 5);
  std::vector<double> xd = randn_d(size_t(B * d), 6, 1.0);
  std::vector<uint8_t> dead(static_cast<size_t>(n), 0);
  for (int j = 0; j < n; j += 3) dead[size_t(j)] = 1;
  auto to_f = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  Params<float> pf{to_f(pd.W_enc), to_f(pd.b_enc), to_f(pd.W_dec), to_f(pd.b_dec)};
  // Round the double copy to the float values so both paths see identical inputs.
  Params<double> pr{std::vector<double>(pf.W_enc.begin(), pf.W_enc.end()),
                    std::vector<double>(pf.b_enc.begin(), pf.b_enc.end()),
                    std::vector<double>(pf.W_dec.begin(), pf.W_dec.end()),
                    std::vector<double>(pf.b_dec.begin(), pf.b_dec.end())};
  std::vector<float> xf = to_f(xd);
  std::vector<double> xr(xf.begin(), xf.end());
  TrainForward<float> ff;
  TrainForward<double> fd;
  cpu::train_forward(cfg, pf, xf.data(), B, 1.1, dead.data(), &ff);
  cpu::train_forward(cfg, pr, xr.data(), B, 1.1, dead.data(), &fd);
  ASSERT_EQ(ff.idx, fd.idx);
  ASSERT_EQ(ff.aux_idx, fd.aux_idx);
  EXPECT_NEAR(ff.loss, fd.loss, 1e-5 * fd.loss);
  Params<float> gf;
  Params<double> gd;
  cpu::train_backward(cfg, pf, ff, &gf);
  cpu::train_backward(cfg, pr, fd, &gd);
  auto cmp = [](const std::vector<float>& a, const std::vector<double>& b, const char* name) {
    std::vector<float> bf(b.begin(), b.end());
    EXPECT_ALLCLOSE(a.data(), bf.data(), a.size(), 1e-5, 1e-4) << name;
    EXPECT_NONZERO(a);
  };
  cmp(gf.W_enc, gd.W_enc, "W_enc");
  cmp(gf.b_enc, gd.b_enc, "b_enc");
  cmp(gf.W_dec, gd.W_dec, "W_dec");
  cmp(gf.b_dec, gd.b_dec, "b_dec");
}

TEST(TrainGrad, BackwardTouchesOnlySelectedLatents) {
  TrainConfig cfg;
  cfg.d_in = 10;
  cfg.d_sae = 200;
  cfg.k = 2;
  const int64_t d = 10, n = 200, B = 3;
  Params<double> p = random_params(d, n, 77);
  std::vector<double> x = randn_d(size_t(B * d), 78, 1.0);
  TrainForward<double> f;
  cpu::train_forward(cfg, p, x.data(), B, 1.0, nullptr, &f);
  Params<double> g;
  cpu::train_backward(cfg, p, f, &g);
  std::vector<uint8_t> selected(static_cast<size_t>(n), 0);
  for (int32_t j : f.idx) selected[size_t(j)] = 1;
  int64_t touched = 0;
  for (int64_t j = 0; j < n; ++j) {
    bool nz = g.b_enc[size_t(j)] != 0;
    for (int64_t i = 0; i < d; ++i) nz |= g.W_dec[size_t(j * d + i)] != 0 || g.W_enc[size_t(i * n + j)] != 0;
    if (!selected[size_t(j)]) EXPECT_FALSE(nz) << "latent " << j << " was not selected but has a gradient";
    touched += nz;
  }
  EXPECT_GT(touched, 0);
  EXPECT_LE(touched, B * cfg.k);
}
