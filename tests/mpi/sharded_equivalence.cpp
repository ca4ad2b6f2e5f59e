// Run under `mpirun -np R` (tests/mpi.cmake runs R = 2 and 3): latent-sharded training equals the
// single-process cpu::train_step. Every rank also runs the unsharded reference on the whole model
// (the sizes are tiny) on the same batches and checks, step by step: the same top-k and AuxK
// selections (global indices, in order), the same dead counts and counters, losses to 1e-6
// (relative), and at the end its shard of the weights and Adam moments to 1e-5 against the
// reference's slice. Then: an exact resume from a sharded checkpoint (bit-identical to the run
// that went on), resharding the set to one and to R + 1 ranks (the same state, bit for bit), refusal
// of a set with a missing part / a part of another step, and
// the final SAE directory written shard by shard against the single-process save.
// Two configs: sae_lens defaults with the scaling factor on, and rescale_acts_by_decoder_norm
// without b_dec on the input. Both are made to have dead latents (small dead_feature_window,
// many latents, small k) and the test fails unless AuxK actually ran.
// Exit 0: pass; 1: a check failed (messages on stderr).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

#include "dist/collectives.h"
#include "dist/sharded_files.h"
#include "dist/sharded_train.h"
#include "equivalence_check.h"
#include "topksae/error.h"
#include "topksae/ops_cpu.h"
#include "topksae/sae_dir.h"
#include "topksae/synthetic.h"
#include "topksae/train.h"

namespace fs = std::filesystem;
using namespace topksae;
using namespace topksae::mpi_test;

namespace {

// Expects fn to throw an Error whose message contains `needle`.
template <typename F>
void expect_error(F fn, const std::string& needle, const char* what) {
  try {
    fn();
    EXPECT(false, what, ": no error");
  } catch (const Error& e) {
    const std::string msg = e.what();
    // Ranks other than the one that failed say which rank failed instead.
    EXPECT(msg.find(needle) != std::string::npos || msg.find("failed on rank") != std::string::npos, what,
           ": unexpected message: ", msg);
  }
}

void run_config(dist::Collectives& comm, TrainConfig cfg, const fs::path& tmp, const char* name) {
  const int R = comm.size();
  const dist::ShardRange r = dist::shard_range(cfg.d_sae, comm.rank(), R);
  SyntheticSource src(equivalence_source(cfg.d_in));

  TrainState ref = TrainState::initial(cfg);
  if (cfg.normalize_activations == Normalize::expected_average_only_in)
    ref.scaling_factor = cpu::estimate_scaling_factor(src, cfg.d_in, cfg.batch_size, cfg.n_batches_for_norm_estimate);
  TrainState sh = dist::initial_shard_state(cfg, r);
  sh.scaling_factor = ref.scaling_factor;
  const Params<float> init_slice = sh.params;
  expect_params(sh.params, dist::slice_params(ref.params, cfg.d_in, cfg.d_sae, r), 0, "init");

  const int64_t steps = 16, ckpt_at = 9, B = cfg.batch_size;
  std::vector<std::vector<float>> batches(size_t(steps), std::vector<float>(size_t(B * cfg.d_in)));
  for (auto& b : batches) src.next(b.data(), B);

  cpu::TrainWorkspace rws;
  dist::ShardedWorkspace sws;
  int64_t max_dead = 0, aux_steps = 0;
  const fs::path ckpt = tmp / (std::string(name) + "_ckpt");
  TrainState at_ckpt;
  for (int64_t t = 0; t < steps; ++t) {
    const StepMetrics mr = cpu::train_step(cfg, &ref, batches[size_t(t)].data(), B, &rws);
    const StepMetrics ms = dist::sharded_train_step(comm, cfg, r, &sh, batches[size_t(t)].data(), B, &sws);
    EXPECT(sws.top_idx == rws.fwd.idx, name, " step ", t, ": top-k selections differ");
    EXPECT(sws.fwd.k_aux == rws.fwd.k_aux && sws.fwd.n_dead == rws.fwd.n_dead, name, " step ", t, ": k_aux ",
           sws.fwd.k_aux, " vs ", rws.fwd.k_aux, ", n_dead ", sws.fwd.n_dead, " vs ", rws.fwd.n_dead);
    EXPECT(sws.aux_idx == rws.fwd.aux_idx, name, " step ", t, ": AuxK selections differ");
    EXPECT(ms.dead_features == mr.dead_features, name, " step ", t, ": dead ", ms.dead_features, " vs ", mr.dead_features);
    EXPECT(ms.l0 == mr.l0, name, " step ", t, ": l0 ", ms.l0, " vs ", mr.l0);
    EXPECT(close_rel(ms.overall_loss, mr.overall_loss, 1e-6), name, " step ", t, ": loss ", ms.overall_loss, " vs ", mr.overall_loss);
    EXPECT(close_rel(ms.mse_loss, mr.mse_loss, 1e-6), name, " step ", t, ": mse ", ms.mse_loss, " vs ", mr.mse_loss);
    EXPECT(close_rel(ms.auxiliary_reconstruction_loss, mr.auxiliary_reconstruction_loss, 1e-6), name, " step ", t,
           ": aux loss ", ms.auxiliary_reconstruction_loss, " vs ", mr.auxiliary_reconstruction_loss);
    EXPECT(close_rel(ms.explained_variance, mr.explained_variance, 1e-6), name, " step ", t, ": explained variance");
    EXPECT(close_rel(ms.grad_norm, mr.grad_norm, 1e-6), name, " step ", t, ": grad norm ", ms.grad_norm, " vs ", mr.grad_norm);
    EXPECT(close_rel(ms.mean_passes_since_fired, mr.mean_passes_since_fired, 1e-12), name, " step ", t, ": mean passes");
    EXPECT(ms.has_sparsity == mr.has_sparsity && ms.below_1e_5 == mr.below_1e_5 &&
               close_rel(ms.mean_log10_feature_sparsity, mr.mean_log10_feature_sparsity, 1e-9),
           name, " step ", t, ": sparsity window metrics");
    std::vector<int64_t> since(ref.stats.since_fired.begin() + r.lo, ref.stats.since_fired.begin() + r.hi);
    std::vector<int64_t> freq(ref.stats.act_freq.begin() + r.lo, ref.stats.act_freq.begin() + r.hi);
    EXPECT(sh.stats.since_fired == since && sh.stats.act_freq == freq, name, " step ", t, ": dead-latent counters differ");
    max_dead = std::max(max_dead, rws.fwd.n_dead);
    aux_steps += rws.fwd.k_aux > 0 && mr.auxiliary_reconstruction_loss > 0;
    if (t + 1 == ckpt_at) {
      dist::save_sharded_checkpoint(comm, ckpt, cfg, r, sh);
      at_ckpt = sh;
    }
  }
  EXPECT(max_dead > 0 && aux_steps >= 3, name, ": AuxK did not run (max dead ", max_dead, ", AuxK steps ", aux_steps, ")");
  expect_params(sh.params, dist::slice_params(ref.params, cfg.d_in, cfg.d_sae, r), 1e-5, name);
  expect_params(sh.adam_m, dist::slice_params(ref.adam_m, cfg.d_in, cfg.d_sae, r), 1e-5, name);
  EXPECT(max_abs_diff(sh.params.W_enc, init_slice.W_enc) > 1e-3, name, ": the weights did not move");
  if (comm.rank() == 0)
    std::cout << name << ": " << steps << " steps equal on " << R << " ranks (dead latents up to " << max_dead
              << ", AuxK on " << aux_steps << " steps)\n";

  // Exact resume at the same R: load the step-9 set and replay the same batches.
  TrainConfig loaded_cfg;
  TrainState re = dist::load_sharded_checkpoint(comm, ckpt, r, &loaded_cfg);
  EXPECT(bit_equal(re, at_ckpt) && re.scaling_factor == at_ckpt.scaling_factor, name, ": the loaded part differs from the saved state");
  EXPECT(train_config_to_json(loaded_cfg) == train_config_to_json(cfg), name, ": the checkpoint's config differs");
  dist::ShardedWorkspace rws2;
  for (int64_t t = ckpt_at; t < steps; ++t) dist::sharded_train_step(comm, cfg, r, &re, batches[size_t(t)].data(), B, &rws2);
  EXPECT(bit_equal(re, sh), name, ": the resumed run is not bit-identical to the run that went on");

  // The final SAE: one sae_lens directory equal to the single-process save.
  const fs::path fin = tmp / (std::string(name) + "_final"), fin_ref = tmp / (std::string(name) + "_final_ref");
  SaeDirExtras ex;
  dist::save_sharded_final(comm, fin, cfg, r, sh, ex);
  if (comm.rank() == 0) {
    ex.sparsity = log_feature_sparsity(ref.stats);
    save_sae_dir(fin_ref, final_sae(cfg, ref), ex);
    SaeDirExtras ea, eb;
    const Sae a = load_sae_dir(fin, &ea), b = load_sae_dir(fin_ref, &eb);
    EXPECT(a.cfg.d_sae == b.cfg.d_sae && a.cfg.normalize == b.cfg.normalize, name, ": final cfg differs");
    expect_params(from_sae_params(a.params), from_sae_params(b.params), 1e-5, "final SAE");
    EXPECT(ea.sparsity && eb.sparsity && *ea.sparsity == *eb.sparsity, name, ": final sparsity differs");
  }

  // Resharding: the step-9 set loaded for another number of ranks is the same state split
  // differently. The whole model (a range of all latents, as for one rank), sliced to this rank's
  // range, is this rank's saved part bit for bit; a part for R + 1 ranks is that model's slice.
  {
    const TrainState whole = dist::load_sharded_checkpoint(comm, ckpt, dist::shard_range(cfg.d_sae, 0, 1), nullptr);
    auto sliced = [&](const dist::ShardRange& q) {
      TrainState s = whole;
      s.params = dist::slice_params(whole.params, cfg.d_in, cfg.d_sae, q);
      s.adam_m = dist::slice_params(whole.adam_m, cfg.d_in, cfg.d_sae, q);
      s.adam_v = dist::slice_params(whole.adam_v, cfg.d_in, cfg.d_sae, q);
      s.stats.since_fired.assign(whole.stats.since_fired.begin() + q.lo, whole.stats.since_fired.begin() + q.hi);
      s.stats.act_freq.assign(whole.stats.act_freq.begin() + q.lo, whole.stats.act_freq.begin() + q.hi);
      return s;
    };
    EXPECT(whole.params.b_enc.size() == size_t(cfg.d_sae) && bit_equal(sliced(r), at_ckpt) &&
               whole.scaling_factor == at_ckpt.scaling_factor && whole.data_position == at_ckpt.data_position &&
               whole.n_training_samples == at_ckpt.n_training_samples,
           name, ": the set resharded to one range of all latents is not the saved state");
    if (R + 1 <= cfg.d_sae) {
      const dist::ShardRange other = dist::shard_range(cfg.d_sae, comm.rank(), R + 1);
      EXPECT(bit_equal(dist::load_sharded_checkpoint(comm, ckpt, other, nullptr), sliced(other)), name,
             ": the set resharded to ", R + 1, " ranks is not the saved state's slice");
    }
  }

  // Refusals, by name: a part of another step, a missing part.
  comm.barrier();
  const fs::path part1 = ckpt / "step-000000009" / concat("rank-00001-of-", std::string(5 - std::to_string(R).size(), '0'), R, ".part");
  if (comm.rank() == 0) EXPECT(fs::exists(part1), "expected part ", part1.string());
  comm.barrier();
  // A part of another step: rank 1's part of a later set copied into the step-9 set.
  {
    const fs::path later = tmp / (std::string(name) + "_later");
    dist::save_sharded_checkpoint(comm, later, cfg, r, sh);  // step 16
    comm.barrier();
    if (comm.rank() == 0) {
      const fs::path later_part = later / "step-000000016" / part1.filename();
      fs::copy_file(later_part, part1, fs::copy_options::overwrite_existing);
    }
    comm.barrier();
    expect_error([&] { dist::load_sharded_checkpoint(comm, ckpt, r, nullptr); }, "is from step 16", "part of another step");
    comm.barrier();
    if (comm.rank() == 0) fs::remove(part1);
    comm.barrier();
    expect_error([&] { dist::load_sharded_checkpoint(comm, ckpt, r, nullptr); }, part1.string() + " (rank 1 of",
                 "missing part");
  }
}

// Ties and NaN: rows whose values repeat across the shards (and NaN, which ranks last). The global
// top-k of the candidate all-gather must be cpu::topk_select's on the whole row, ties to the
// lower index; and over a subset of latents (AuxK's dead ones) the same order restricted to it.
void check_ties(dist::Collectives& comm) {
  const int64_t n = 23, B = 6, k = 7;
  const dist::ShardRange r = dist::shard_range(n, comm.rank(), comm.size());
  const float levels[] = {-1.f, 0.f, 0.5f, 0.5f, 2.f, NAN, 0.5f};
  std::vector<float> h(size_t(B * n));  // [B, n], the same on every rank
  for (int64_t e = 0; e < B * n; ++e) h[size_t(e)] = levels[(e * 5 + e / n) % 7];
  std::vector<float> local(size_t(B * r.size()));  // [B, shard]
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < r.size(); ++j) local[size_t(b * r.size() + j)] = h[size_t(b * n + r.lo + j)];
  std::vector<int32_t> want(size_t(B * k)), got(size_t(B * k));
  std::vector<float> want_v(size_t(B * k)), got_v(size_t(B * k));
  cpu::topk_select(h.data(), B, n, k, want.data(), want_v.data());
  dist::ShardedWorkspace ws;
  dist::sharded_topk(comm, r, local.data(), B, r.size(), nullptr, r.size(), k, &ws, got.data(), got_v.data());
  EXPECT(got == want, "top-k with ties differs from cpu::topk_select");
  // Over the odd latents only (a stand-in for the dead ones), k = 4.
  std::vector<int32_t> sub;
  for (int64_t j = 0; j < r.size(); ++j)
    if ((r.lo + j) % 2) sub.push_back(int32_t(j));
  const int64_t ka = 4;
  std::vector<int32_t> got_a(size_t(B * ka));
  std::vector<float> got_av(size_t(B * ka));
  dist::sharded_topk(comm, r, local.data(), B, r.size(), sub.data(), int64_t(sub.size()), ka, &ws, got_a.data(),
                     got_av.data());
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int32_t> odd;
    for (int32_t j = 1; j < n; j += 2) odd.push_back(j);
    auto key = [&](int32_t j) { const float v = h[size_t(b * n + j)]; return std::isnan(v) ? -INFINITY : v; };
    std::stable_sort(odd.begin(), odd.end(), [&](int32_t a, int32_t c) { return key(a) > key(c); });
    EXPECT(std::equal(odd.begin(), odd.begin() + ka, got_a.begin() + b * ka), "row ", b, ": top-k over a subset with ties");
  }
  int64_t ties = 0;  // the rows must really hold ties inside the selection
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 1; s < k; ++s) ties += want_v[size_t(b * k + s)] == want_v[size_t(b * k + s - 1)];
  EXPECT(ties >= B, "the tie test has only ", ties, " ties");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: mpirun -np R sharded_equivalence TMPDIR\n";
    return 2;
  }
  try {
    auto comm = dist::make_mpi_collectives();
    g_rank = comm->rank();
    if (comm->size() < 2) {
      std::cerr << "run me under mpirun -np 2 or more\n";
      return 2;
    }
    const fs::path tmp = fs::path(argv[1]) / concat("np", comm->size());
    if (comm->rank() == 0) {
      fs::remove_all(tmp);
      fs::create_directories(tmp);
    }
    comm->barrier();
    check_ties(*comm);

    TrainConfig a;  // sae_lens defaults, scaling factor on
    a.d_in = 20;
    a.d_sae = 200;  // 100 / 100, or 67 / 67 / 66
    a.k = 3;
    a.batch_size = 24;
    a.training_tokens = 24 * 100;
    a.lr = 5e-3;
    a.dead_feature_window = 3;
    a.feature_sampling_window = 5;
    a.normalize_activations = Normalize::expected_average_only_in;
    a.n_batches_for_norm_estimate = 2;
    a.seed = 11;
    run_config(*comm, a, tmp, "defaults+scaling");

    TrainConfig b = a;  // decoder-norm rescaling, no b_dec on the input, warm-up schedule
    b.normalize_activations = Normalize::none;
    b.rescale_acts_by_decoder_norm = true;
    b.apply_b_dec_to_input = false;
    b.d_sae = 157;
    b.lr_warm_up_steps = 4;
    b.lr_scheduler_name = LrScheduler::cosineannealing;
    b.seed = 12;
    run_config(*comm, b, tmp, "rescale+no_b_dec");

    {  // a rank fed another batch is refused on every rank, before any state changes
      const dist::ShardRange r = dist::shard_range(a.d_sae, comm->rank(), comm->size());
      TrainState st = dist::initial_shard_state(a, r);
      std::vector<float> x(size_t(a.batch_size * a.d_in), 0.5f);
      if (comm->rank() == 1) x[3] = 0.25f;
      dist::ShardedWorkspace ws;
      expect_error([&] { dist::sharded_train_step(*comm, a, r, &st, x.data(), a.batch_size, &ws); },
                   "rank 1 read a different batch than rank 0", "different batches");
      EXPECT(st.step == 0, "the refused step changed the state");
    }

    double fails = g_fail;
    comm->all_reduce_sum(&fails, 1);
    if (comm->rank() == 0) std::cout << (fails == 0 ? "PASS\n" : "FAIL\n");
    return fails == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "rank " << g_rank << ": error: " << e.what() << "\n";
    return 1;
  }
}
