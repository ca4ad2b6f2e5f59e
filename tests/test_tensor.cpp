// The tensor/buffer layer and dtype conversions.
#include <cstring>

#include "test_util.h"
#include "topksae/error.h"
#include "topksae/tensor.h"

using namespace topksae;

TEST(Tensor, ShapeDtypeDeviceAndCopies) {
  Tensor t = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(t.ndim(), 2);
  EXPECT_EQ(t.dim(0), 2);
  EXPECT_EQ(t.dim(-1), 3);
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.nbytes(), 24u);
  EXPECT_EQ(t.device(), Device::cpu);
  EXPECT_EQ(t.describe(), "f32[2, 3] on cpu");
  Tensor c = t.clone();
  c.data<float>()[0] = 42;
  EXPECT_EQ(t.data<float>()[0], 1.f) << "clone must be a deep copy";
  EXPECT_EQ(c.data<float>()[5], 6.f);
  Tensor moved = std::move(c);
  EXPECT_EQ(moved.data<float>()[0], 42.f);
  Tensor v = t.reshape_view({3, 2});
  EXPECT_TRUE(v.is_borrowed());
  EXPECT_EQ(v.data<float>(), t.data<float>());
}

TEST(Tensor, ZerosAndBorrow) {
  Tensor z = Tensor::zeros({4, 5}, DType::i64);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(z.data<int64_t>()[i], 0);
  std::vector<int32_t> mine = {7, 8, 9};
  Tensor b = Tensor::borrow(mine.data(), {3}, DType::i32, Device::cpu);
  EXPECT_EQ(b.data<int32_t>()[2], 9);
  EXPECT_EQ(b.data<int32_t>(), mine.data()) << "borrow must not copy";
}

TEST(Tensor, ErrorsAUserCanCause) {
  Tensor t = Tensor::zeros({2, 2}, DType::f32);
  EXPECT_THROW(t.data<int32_t>(), Error);
  EXPECT_THROW(t.dim(2), Error);
  EXPECT_THROW(t.reshape_view({3}), Error);
  EXPECT_THROW(Tensor::empty({-1, 2}, DType::f32), Error);
  EXPECT_THROW(Tensor::from_vector({1, 2, 3}, {2, 2}), Error);
  EXPECT_THROW(Tensor::borrow(nullptr, {2}, DType::f32, Device::cpu), Error);
  Tensor i = Tensor::zeros({4}, DType::i32);
  EXPECT_THROW(t.copy_from(i), Error);
  try {
    t.data<double>();
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("f32[2, 2] on cpu accessed as f64"), std::string::npos) << e.what();
  }
}

TEST(Tensor, DeviceTensorsWithoutGpuFailClearly) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is present; this checks the no-GPU error path";
  try {
    Tensor::empty({4}, DType::f32, Device::cuda);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_FALSE(cuda_unavailable_reason().empty());
    EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos) << e.what();
  }
}

// In the GPU suite (Cuda*) so that tools/gpu_check.sh and the CUDA emulation run it.
TEST(CudaTensor, DeviceRoundTrip) {
  SKIP_WITHOUT_GPU();
  Tensor h = Tensor::from_vector(test::randn(1001, 5), {1001});
  Tensor d = h.to(Device::cuda);
  EXPECT_EQ(d.device(), Device::cuda);
  Tensor back = d.to(Device::cpu);
  EXPECT_EQ(std::memcmp(back.raw(), h.raw(), h.nbytes()), 0);
  Tensor pinned = Tensor::empty({1001}, DType::f32, Device::cpu, HostMemory::pinned);
  pinned.copy_from(d);
  EXPECT_EQ(std::memcmp(pinned.raw(), h.raw(), h.nbytes()), 0);
}

TEST(DType, NamesAndSizes) {
  EXPECT_EQ(itemsize(DType::bf16), 2u);
  EXPECT_EQ(itemsize(DType::i64), 8u);
  EXPECT_EQ(dtype_from_safetensors("BF16"), DType::bf16);
  EXPECT_EQ(safetensors_dtype_name(DType::boolean), "BOOL");
  EXPECT_EQ(dtype_from_torch_name("float16"), DType::f16);
  EXPECT_THROW(dtype_from_safetensors("F8_E4M3"), Error);
  EXPECT_THROW(dtype_from_torch_name("int8"), Error);
}

TEST(DType, HalfAndBfloatConversions) {
  // Exactly representable values survive both ways.
  for (float f : {0.f, -0.f, 1.f, -2.5f, 65504.f, 6.103515625e-05f /*min normal*/, 5.9604645e-08f /*min subnormal*/}) {
    EXPECT_EQ(f16_to_f32(f32_to_f16(f)), f) << f;
  }
  EXPECT_EQ(f32_to_f16(1.f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.f), 0xc000);
  EXPECT_TRUE(std::isinf(f16_to_f32(f32_to_f16(70000.f))));
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(NAN))));
  // Round to nearest even: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 -> 1.
  EXPECT_EQ(f16_to_f32(f32_to_f16(1.f + std::ldexp(1.f, -11))), 1.f);
  EXPECT_EQ(f32_to_bf16(1.f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(3.140625f)), 3.140625f);
  // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7 -> even (1).
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.f + std::ldexp(1.f, -8))), 1.f);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  std::vector<float> src = {1.5f, -0.25f, 1024.f};
  std::vector<uint16_t> h(3);
  std::vector<float> back(3);
  convert_from_f32(DType::f16, src.data(), h.data(), 3);
  convert_to_f32(DType::f16, h.data(), back.data(), 3);
  EXPECT_EQ(back, src);
  // The bulk conversion (eight at a time with F16C where the CPU has it, the data path's widening)
  // agrees with the scalar one on every half, bit for bit but for the NaNs, which stay NaN. Odd
  // offsets and a length that is not a multiple of 8 exercise the tail.
  std::vector<uint16_t> all(65536 + 3);
  for (size_t i = 0; i < all.size(); ++i) all[i] = uint16_t(i * 40503u);
  std::vector<float> wide(all.size() - 1);
  convert_to_f32(DType::f16, all.data() + 1, wide.data(), wide.size());
  size_t nans = 0;
  for (size_t i = 0; i < wide.size(); ++i) {
    const float want = f16_to_f32(all[i + 1]);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(wide[i])) << "half 0x" << std::hex << all[i + 1];
      ++nans;
      continue;
    }
    uint32_t a, b;
    std::memcpy(&a, &wide[i], 4);
    std::memcpy(&b, &want, 4);
    ASSERT_EQ(a, b) << "half 0x" << std::hex << all[i + 1];
  }
  EXPECT_GT(nans, 1000u);  // every half was visited: 2046 NaN patterns among 65536
}
