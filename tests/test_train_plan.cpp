// The CUDA training step's memory plan (src/train/train_plan.h): host-only arithmetic, tested in
// every build (no GPU). The CUDA tests check that an object allocates exactly plan.bytes()
// (CudaTrainStep.PlannedBytesMatchAllocation); here, the choices and the sizes themselves.
#include "test_util.h"
#include "topksae/error.h"
#include "train/train_plan.h"

namespace topksae::test {
namespace {

using train_detail::AuxPath;
using train_detail::DeviceLimits;
using train_detail::kPlanHeadroomBytes;
using train_detail::plan_train_step;
using train_detail::TrainPlan;

constexpr DeviceLimits kH100{227 * 1024, 50LL << 20};

TrainConfig config(int64_t d, int64_t n, int64_t k, int64_t batch) {
  TrainConfig c;
  c.d_in = d;
  c.d_sae = n;
  c.k = k;
  c.batch_size = batch;
  c.training_tokens = batch * 10;
  return c;
}

TEST(TrainPlan, ShapesAndParameterLayout) {
  const TrainPlan p = plan_train_step(config(37, 203, 5, 19), {}, kH100);
  EXPECT_EQ(p.d, 37);
  EXPECT_EQ(p.n, 203);
  EXPECT_EQ(p.half_d, 18);
  EXPECT_EQ(p.kcap, 18);
  EXPECT_EQ(p.Bmax, 19);
  EXPECT_EQ(p.E, 19 * (5 + 18));
  EXPECT_EQ(p.oBenc, 37 * 203);
  EXPECT_EQ(p.oWdec, 37 * 203 + 203);
  EXPECT_EQ(p.oBdec, 37 * 203 + 203 + 203 * 37);
  EXPECT_EQ(p.P, 2 * 37 * 203 + 203 + 37);
  EXPECT_EQ(p.sort_bits, 8);  // keys in [0, 203]: 256 > 203
  // d_in = 37 is not a multiple of 4: no float4 slabs, whole-row dz.
  EXPECT_EQ(p.slab_tpt, 0);
  EXPECT_EQ(p.slabs, 0);
  // A small d_sae: the dense capacity holds every latent, so the gather path never runs.
  EXPECT_EQ(p.aux_cap, 203);
  EXPECT_FALSE(p.gather_possible);
  EXPECT_EQ(p.sort_counts(), std::vector<int64_t>{19 * 5});
  EXPECT_EQ(p.pre_elems, std::max<int64_t>(p.hrows * 203, 19 * 203));
  EXPECT_EQ(p.arena_elems, 19 * 203 + 6 * 19 * 5);
  EXPECT_EQ(p.aux_rows_elems, 203 * 37);
  EXPECT_EQ(p.w16_elems, 0);
}

TEST(TrainPlan, AutomaticDenseCapacityAndGatherPath) {
  // d_sae 65536: cap = max(n / 8, 4096) = 8192 < n, so a step may gather.
  const TrainPlan p = plan_train_step(config(2304, 65536, 64, 4096), {}, kH100);
  EXPECT_EQ(p.aux_cap, 8192);
  EXPECT_TRUE(p.gather_possible);
  EXPECT_EQ(p.sort_counts(), (std::vector<int64_t>{4096 * 64, 4096 * (64 + 1152)}));
  EXPECT_EQ(p.arena_elems, std::max<int64_t>(4096 * 8192 + 6 * 4096 * 64, 6 * p.E));
  // 256 MiB chunks of h: 4096 x 65536 floats is 1 GiB, so 4 chunks of 1024 rows.
  EXPECT_EQ(p.hrows, 1024);
  EXPECT_EQ(p.pre_elems, std::max<int64_t>(1024 * 65536, 4096 * 8192));
  EXPECT_GT(p.slab_tpt, 0);
  EXPECT_EQ(p.slabs, (2304 + 4 * p.slab_tpt - 1) / (4 * p.slab_tpt));
  EXPECT_EQ(p.part_elems, p.slabs * 4096 * 64);
}

TEST(TrainPlan, StepShapePerDeadBound) {
  const TrainPlan p = plan_train_step(config(2304, 65536, 64, 4096), {}, kH100);
  auto s = p.shape(0);
  EXPECT_EQ(s.path, AuxPath::none);
  EXPECT_EQ(s.entries_offset, 0);
  EXPECT_EQ(s.entries_per, 4096 * 64);
  s = p.shape(33);  // padded to 64 columns; AuxK's k = min(1152, 64)
  EXPECT_EQ(s.path, AuxPath::dense);
  EXPECT_EQ(s.ndc, 64);
  EXPECT_EQ(s.kc, 64);
  EXPECT_EQ(s.kT, 0);
  EXPECT_EQ(s.entries_offset, p.aux_cols_elems());  // after Hc / Zd
  EXPECT_EQ(s.entries_per, 4096 * 64);
  s = p.shape(5000);
  EXPECT_EQ(s.path, AuxPath::dense);
  EXPECT_EQ(s.ndc, 5024);
  EXPECT_EQ(s.kc, 1152);
  s = p.shape(8192);
  EXPECT_EQ(s.path, AuxPath::dense);
  EXPECT_EQ(s.ndc, 8192);
  s = p.shape(8193);  // over the capacity: the T entries join the entry lists
  EXPECT_EQ(s.path, AuxPath::gather);
  EXPECT_EQ(s.ndc, 0);
  EXPECT_EQ(s.kT, 1152);
  EXPECT_EQ(s.entries_offset, 0);
  EXPECT_EQ(s.entries_per, p.E);
  // Every path's six entry arrays fit the arena.
  for (int64_t nd : {int64_t(0), int64_t(1), int64_t(8192), int64_t(65536)}) {
    const auto t = p.shape(nd);
    EXPECT_LE(t.entries_offset + 6 * t.entries_per, p.arena_elems) << nd;
  }
}

TEST(TrainPlan, BytesAddUpEveryBuffer) {
  TrainConfig c = config(40, 300, 6, 17);
  const TrainPlan p = plan_train_step(c, {.precision = cuda::Precision::bf16, .slab_threads = 16}, kH100);
  ASSERT_EQ(p.aux_cap, 300);
  ASSERT_EQ(p.slab_tpt, 16);
  ASSERT_EQ(p.slabs, 1);  // 40 columns / (4 * 16)
  const int64_t B = 17, d = 40, n = 300, k = 6, kcap = 20, P = 2 * d * n + n + d;
  size_t want = 4 * size_t(P) * 4;                 // param, grad, m, v
  want += size_t(d * n) * 2 + size_t(B * d) * 2;   // bf16 W_enc, u
  want += size_t(B * d) * 4;                       // u
  want += size_t(std::max(B * n, B * n)) * 4;      // h / G (hrows = B; aux_cap = n)
  want += size_t(B * k) * 12 + size_t(B * kcap) * 8;
  want += 4 * size_t(B * d) * 4 + size_t(d) * 8 + size_t(B) * 32;
  want += size_t(B * n + 6 * B * k) * 4;           // arena
  want += size_t(n + 1) * 4;                       // start
  want += size_t(1 * B * k) * 4;                   // part
  want += 1000;                                    // sort_tmp (given)
  want += size_t(n) * 22;                          // dead, fired, since, act, dead32
  want += size_t(n) * 8 + size_t(n) * 8 + size_t(n * d) * 4 + 300;  // pos, pos_of, dead_list, dbe, aux_rows, scan_tmp
  want += 128;                                     // the metrics record (given)
  EXPECT_EQ(p.bytes(1000, 300, 128), want);
  // Without bf16 the two bf16 copies go; fp32 and tf32 plan the same bytes.
  const TrainPlan f = plan_train_step(c, {.precision = cuda::Precision::fp32, .slab_threads = 16}, kH100);
  const TrainPlan t = plan_train_step(c, {.precision = cuda::Precision::tf32, .slab_threads = 16}, kH100);
  EXPECT_EQ(f.bytes(1000, 300, 128), want - size_t(d * n) * 2 - size_t(B * d) * 2);
  EXPECT_EQ(t.bytes(1000, 300, 128), f.bytes(1000, 300, 128));
}

TEST(TrainPlan, ExplicitOptions) {
  const TrainConfig c = config(64, 512, 8, 100);
  EXPECT_EQ(plan_train_step(c, {.encode_rows = -1}, kH100).hrows, 100);
  EXPECT_EQ(plan_train_step(c, {.encode_rows = 30}, kH100).hrows, 30);
  EXPECT_EQ(plan_train_step(c, {.max_batch = 7}, kH100).Bmax, 7);
  const TrainPlan g = plan_train_step(c, {.aux_dense_cap = 0}, kH100);
  EXPECT_EQ(g.aux_cap, 0);
  EXPECT_TRUE(g.gather_possible);
  EXPECT_EQ(g.aux_rows_elems, 0);
  EXPECT_EQ(g.shape(1).path, AuxPath::gather);
  EXPECT_EQ(plan_train_step(c, {.aux_dense_cap = 100}, kH100).aux_cap, 100);
  EXPECT_EQ(plan_train_step(c, {.slab_threads = -1}, kH100).slab_tpt, 0);
  // Auto slab width: the widest whose rows fit a quarter of L2 (16 .. 128 threads).
  EXPECT_EQ(plan_train_step(c, {}, kH100).slab_tpt, 128);
  EXPECT_EQ(plan_train_step(c, {}, DeviceLimits{227 * 1024, 4 * 512 * 16 * 16}).slab_tpt, 16);
}

TEST(TrainPlan, RefusesWhatTheKernelsCannotRun) {
  const TrainConfig c = config(64, 512, 8, 100);
  EXPECT_THROW(plan_train_step(c, {.slab_threads = 8}, kH100), Error);
  EXPECT_THROW(plan_train_step(config(63, 512, 8, 100), {.slab_threads = 32}, kH100), Error);  // d_in % 4
  EXPECT_THROW(plan_train_step(c, {.aux_dense_cap = -2}, kH100), Error);
  EXPECT_THROW(plan_train_step(c, {.encode_rows = -2}, kH100), Error);
  EXPECT_THROW(plan_train_step(c, {}, DeviceLimits{2 * 64 * 4 - 1, 50LL << 20}), Error);  // dz's shared memory
  EXPECT_NO_THROW(plan_train_step(c, {}, DeviceLimits{2 * 64 * 4, 50LL << 20}));
  TrainConfig r = c;
  r.rescale_acts_by_decoder_norm = true;
  EXPECT_THROW(plan_train_step(r, {}, kH100), Error);
  // batch * (k + d_in/2) entries must stay below 2^31 (int32 entry numbers).
  EXPECT_THROW(plan_train_step(config(8192, 65536, 64, 1 << 20), {}, kH100), Error);
}

// The fused gradient mode (cuda::GradStorage::fused) drops the dense gradient [P] and keeps the
// biases' gradients [n + d] and, with dense AuxK, a second [aux_cap, d] block: every other buffer
// is the stored plan's.
TEST(TrainPlan, FusedGradientsDropTheDenseGradient) {
  const TrainConfig c = config(40, 300, 6, 17);
  const TrainPlan st = plan_train_step(c, {.grad_storage = cuda::GradStorage::stored}, kH100);
  const TrainPlan fu = plan_train_step(c, {.grad_storage = cuda::GradStorage::fused}, kH100);
  const int64_t d = 40, n = 300, P = 2 * d * n + n + d;
  EXPECT_FALSE(st.fused);
  EXPECT_TRUE(fu.fused);
  EXPECT_EQ(st.grad_elems, P);
  EXPECT_EQ(st.gbias_elems, 0);
  EXPECT_EQ(st.aux_rows2_elems, 0);
  EXPECT_EQ(fu.grad_elems, 0);
  EXPECT_EQ(fu.gbias_elems, n + d);
  ASSERT_EQ(fu.aux_cap, n);
  EXPECT_EQ(fu.aux_rows2_elems, n * d);
  EXPECT_EQ(st.bytes(1000, 300, 128) - fu.bytes(1000, 300, 128), size_t(P - (n + d) - n * d) * 4);
  // Gather-only AuxK: no dead block to keep, the saving is the gradient less the biases'.
  const TrainPlan g = plan_train_step(c, {.aux_dense_cap = 0, .grad_storage = cuda::GradStorage::fused}, kH100);
  EXPECT_EQ(g.aux_rows2_elems, 0);
  const TrainPlan gs = plan_train_step(c, {.aux_dense_cap = 0, .grad_storage = cuda::GradStorage::stored}, kH100);
  EXPECT_EQ(gs.bytes(0, 0, 0) - g.bytes(0, 0, 0), size_t(P - (n + d)) * 4);
  // Automatic: stored where it fits (here, and whenever the memory is unknown), fused where not.
  EXPECT_FALSE(plan_train_step(c, {}, kH100).fused);
  const int64_t stored_bytes = int64_t(st.bytes(0, 0, 0));
  DeviceLimits tight = kH100;
  tight.memory_bytes = stored_bytes + kPlanHeadroomBytes;
  EXPECT_FALSE(plan_train_step(c, {}, tight).fused);
  tight.memory_bytes -= 1;
  EXPECT_TRUE(plan_train_step(c, {}, tight).fused);
  EXPECT_FALSE(plan_train_step(c, {.grad_storage = cuda::GradStorage::stored}, tight).fused);  // as asked
}

// Issue 20's one-card ceiling: d_in 4096 x 1,310,720 latents (5 x 2^18), k 64, batch 4096, fp32
// weights and Adam, on a card with 139 GiB. The stored plan (16 bytes per parameter: ~160 GiB for
// the parameters alone) cannot fit; the automatic choice takes the fused one, which fits with
// the headroom (CUB's temporaries, sized only on a GPU, are a few MiB at this shape).
TEST(TrainPlan, OneCardCeilingD4096With1310720LatentsFitsAnH200) {
  const int64_t GiB = int64_t(1) << 30;
  DeviceLimits h200 = kH100;  // the same die: shared memory and L2 as the H100
  h200.memory_bytes = 139 * GiB;
  const TrainConfig c = config(4096, 5 << 18, 64, 4096);
  const TrainPlan stored = plan_train_step(c, {.grad_storage = cuda::GradStorage::stored}, h200);
  const TrainPlan autop = plan_train_step(c, {}, h200);
  const int64_t P = 2 * 4096 * int64_t(5 << 18) + (5 << 18) + 4096;
  ASSERT_EQ(stored.P, P);
  EXPECT_GT(int64_t(stored.bytes(0, 0, 0)), 139 * GiB) << "the 16 B/param plan must not fit: the test would prove nothing";
  EXPECT_GE(int64_t(stored.bytes(0, 0, 0)), 16 * P);
  ASSERT_TRUE(autop.fused) << "automatic storage must pick the fused gradients here";
  const int64_t planned = int64_t(autop.bytes(0, 0, 0));
  EXPECT_LE(planned + kPlanHeadroomBytes, 139 * GiB) << "planned " << double(planned) / double(GiB) << " GiB";
  EXPECT_GE(planned, 12 * P);  // the parameters and both moments at least
  // 2^20 latents (the old ceiling) still fit with stored gradients (~135 GiB), so automatic keeps them.
  const TrainPlan at20 = plan_train_step(config(4096, 1 << 20, 64, 4096), {}, h200);
  EXPECT_FALSE(at20.fused);
}

// The ceiling stage of tools/gpu_check.sh on an 80 GiB card (an H100: 79.6 GiB): 4096 x 655,360
// latents fits only with fused gradients, so the stage runs the 12 B/param plan there too.
TEST(TrainPlan, HalfTheCeilingFitsAnH100OnlyFused) {
  const int64_t MiB = int64_t(1) << 20;
  DeviceLimits h100 = kH100;
  h100.memory_bytes = 81559 * MiB;
  const TrainConfig c = config(4096, 655360, 64, 4096);
  const TrainPlan stored = plan_train_step(c, {.grad_storage = cuda::GradStorage::stored}, h100);
  EXPECT_GT(int64_t(stored.bytes(0, 0, 0)), h100.memory_bytes);
  const TrainPlan autop = plan_train_step(c, {}, h100);
  ASSERT_TRUE(autop.fused);
  EXPECT_LE(int64_t(autop.bytes(0, 0, 0)) + kPlanHeadroomBytes, h100.memory_bytes);
}

// Past 2^20 latents: the plan's index arithmetic at d_sae = 2^24 (keys in [0, n] need 25 bits,
// the encoder runs in chunks of 4 rows, the dense AuxK capacity is capped by cuBLAS's int).
TEST(TrainPlan, SixteenMillionLatents) {
  const TrainConfig c = config(4096, int64_t(1) << 24, 64, 4096);
  const TrainPlan p = plan_train_step(c, {.grad_storage = cuda::GradStorage::fused}, kH100);
  EXPECT_EQ(p.sort_bits, 25);
  EXPECT_EQ(p.hrows, 4);
  EXPECT_EQ(p.P, 2 * 4096 * (int64_t(1) << 24) + (int64_t(1) << 24) + 4096);
  EXPECT_EQ(p.aux_cap, ((int64_t(1) << 31) - 1) / 4096 / 32 * 32);
  EXPECT_TRUE(p.gather_possible);
  EXPECT_EQ(p.E, 4096 * (64 + 2048));
  EXPECT_GT(p.bytes(0, 0, 0), size_t(12) * size_t(p.P));
}

}  // namespace
}  // namespace topksae::test
