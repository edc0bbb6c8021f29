// The pipelined implicit-GEMM tensor-core conv forward (kernels/cuda/conv_implicit_gemm.cu) must
// give the same bits as the generic tensor-core tiled GEMM (tiled_gemm_tc.h) it replaces, in tf32
// and bf16, with both block tilings (64x64 and 128x128), over awkward shapes: C = 4, 8, 64, 68
// (16-byte cp.async) and 3, 5 (4-byte cp.async), 1x1, 3x3 and 7x7 kernels, stride 1 and 2, padding 0..3,
// M and O not multiples of the tiles (O odd too), K not a multiple of the 32-wide K tile, batch 1
// and 3. Outputs start poisoned (NaN) and buffers have red zones (gpu_harness.h), so an unwritten
// element or a stray write fails. The launch counters prove which kernel (and which copy width)
// ran; f32 math and a forced `tiled` must not take it.
//
// Bitwise equality is the right test (not a tolerance): both kernels feed the same operand words to
// the same mma instructions over the same k-steps in the same order (argument at the top of
// conv_implicit_gemm.cu), so any difference is a bug: a wrong fragment, a swizzle slip, a copy
// read before its wait, a wrong (kh, kw, c) step, a missing zero-fill.
#include <doctest/doctest.h>

#include <sstream>

#include "kernels/cuda/conv_backward.h"
#include "kernels/cuda/conv_implicit_gemm.h"
#include "kernels/cuda/conv_math.h"
#include "kernels/ops.h"
#include "tests/gpu/conv_cases.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"
#if defined(AE_EMULATED_DEVICE)
#include "kernels/emu/async_copy.h"
#endif

using namespace ae;
using namespace ae::gputest;
using cuda::ConvForwardKernel;
using cuda::ConvMath;

namespace {

// {n, h, w, c, o, k, stride, pad}. Small spatial sizes: the emulated tensor-core kernels are slow.
const ConvCase kCases[] = {
    {1, 5, 7, 4, 5, 3, 1, 1},     // C = 4, K = 36: a ragged K tile and the all-zero steps to 64
    {3, 6, 5, 8, 9, 3, 2, 0},     // batch 3, stride 2, odd O
    {1, 9, 9, 64, 70, 1, 1, 0},   // 1x1: M = 81 and O = 70 past one 64 tile
    {1, 7, 6, 68, 13, 3, 2, 1},   // C = 68: K = 612, a (kh, kw, c) carry inside a 32-wide tile
    {1, 11, 9, 4, 16, 7, 2, 3},   // 7x7, padding 3: rows of pure padding
    {3, 5, 5, 4, 8, 1, 2, 0},     // 1x1 stride 2
    {2, 9, 8, 8, 130, 3, 1, 1},   // M = 144, O = 130: past one 128 tile in both directions
    {2, 3, 3, 8, 3, 3, 1, 2},     // padding 2 on a 3x3 image: outputs whose whole patch is padding
    {1, 9, 9, 3, 8, 7, 2, 3},     // the stem's shape in small: C = 3 takes the 4-byte copies
    {2, 5, 4, 5, 7, 3, 1, 1},     // C = 5: 4-byte copies, taps straddling every 16-byte chunk
};

std::string describe(const Precision& pr, const ConvCase& c) {
  std::ostringstream os;
  os << pr.name << " x [" << c.n << "," << c.h << "," << c.w << "," << c.c << "] o " << c.o << " k " << c.k
     << " stride " << c.stride << " pad " << c.pad;
  return os.str();
}

// t [..., 3] -> [..., 4] with a zero fourth channel, on the host: what the stem path pads to.
Tensor pad_channels_on_host(const Tensor& t) {
  Shape shape = t.shape();
  shape.back() = 4;
  Tensor out = Tensor::zeros(shape, DType::f32, Device::cpu());
  for (int64_t i = 0; i < t.numel(); ++i) out.f32()[i / 3 * 4 + i % 3] = t.f32()[i];
  return out;
}

int64_t launches_of(ConvForwardKernel k) {
  const cuda::ConvForwardLaunches l = cuda::conv_forward_launches();
  switch (k) {
    case ConvForwardKernel::tiled: return l.tc_tiled;
    case ConvForwardKernel::pipelined_64x64: return l.pipelined_64x64;
    case ConvForwardKernel::pipelined_128x128: return l.pipelined_128x128;
    case ConvForwardKernel::automatic: break;
  }
  return -1;
}

// conv2d_forward with kernel `k` forced; checks that exactly that kernel was launched once.
Tensor forward_with(ConvForwardKernel k, const ops::Conv2dParams& p, const Tensor& x, const Tensor& w) {
  const cuda::ScopedConvForwardKernel force(k);
  const cuda::ConvForwardLaunches before = cuda::conv_forward_launches();
  const int64_t mine = launches_of(k);
  Tensor y = ops::conv2d_forward(p, x, w);
  const cuda::ConvForwardLaunches after = cuda::conv_forward_launches();
  const int64_t total_before = before.f32_tiled + before.tc_tiled + before.pipelined_64x64 + before.pipelined_128x128;
  const int64_t total_after = after.f32_tiled + after.tc_tiled + after.pipelined_64x64 + after.pipelined_128x128;
  CHECK(launches_of(k) - mine == 1);
  CHECK(total_after - total_before == 1);
  return y;
}


}  // namespace

TEST_CASE("pipelined tensor-core conv forward is bitwise equal to the tiled tensor-core kernel") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 500;
  for (const ConvCase& c : kCases) {
    const ops::Conv2dParams p = params_of(c);
    const Tensor x = test::random_tensor({c.n, c.h, c.w, c.c}, seed++);
    const Tensor w = test::random_tensor({c.o, c.k, c.k, c.c}, seed++);
    const Tensor xd = to_device(x), wd = to_device(w);
    const Tensor ref = ops::conv2d_forward(p, x, w);  // CPU float32: a sanity bound below
    REQUIRE(cuda::conv_forward_pipelined_supported(ConvGeometry(p, xd.shape(), c.o), xd.f32(), wd.f32()));
    for (const Precision& pr : kPrecisions) {
      const cuda::ScopedConvMath mode(pr.math);
      const std::string what = describe(pr, c);
      INFO(what);
      const Tensor tiled = forward_with(ConvForwardKernel::tiled, p, xd, wd);
      const int64_t narrow_before = cuda::conv_forward_launches().pipelined_4byte;
      const Tensor small = forward_with(ConvForwardKernel::pipelined_64x64, p, xd, wd);
      const Tensor large = forward_with(ConvForwardKernel::pipelined_128x128, p, xd, wd);
      CHECK(cuda::conv_forward_launches().pipelined_4byte - narrow_before == (c.c % 4 == 0 ? 0 : 2));
      REQUIRE(small.shape() == ref.shape());
      CHECK(test::bitwise_equal(small, tiled));
      CHECK(test::bitwise_equal(large, tiled));
      // Not a vacuous equality (both NaN, both zero): the result is a convolution. Loose: the
      // precision itself is test_cuda_conv_tc's business.
      test::require_cuda_close(tiled, ref, {0.25, 0.05, 1e-3}, what);
      require_guards_intact();
    }
  }
#if defined(AE_EMULATED_DEVICE)
  CHECK(emu::async_copy_take_leaks().empty());
#endif
}

TEST_CASE("conv forward kernel choice: automatic takes the pipelined kernel, 4-byte copies where 16 cannot be") {
  AE_GPU_TEST_PRELUDE();
  const cuda::ScopedConvMath mode(ConvMath::tf32);
  const cuda::ScopedConvForwardKernel automatic(ConvForwardKernel::automatic);
  const ConvCase c{1, 6, 5, 8, 5, 3, 1, 1};
  const ops::Conv2dParams p = params_of(c);
  const Tensor x = to_device(test::random_tensor({c.n, c.h, c.w, c.c}, 71));
  const Tensor w = to_device(test::random_tensor({c.o, c.k, c.k, c.c}, 72));

  // Supported, small grid: the 64x64 pipelined kernel; and it copies with cp.async.
#if defined(AE_EMULATED_DEVICE)
  const std::size_t issued = emu::async_copy_stats().issued;
#endif
  cuda::ConvForwardLaunches before = cuda::conv_forward_launches();
  const Tensor y_auto = ops::conv2d_forward(p, x, w);
  cuda::ConvForwardLaunches after = cuda::conv_forward_launches();
  CHECK(after.pipelined_64x64 - before.pipelined_64x64 == 1);
  CHECK(after.tc_tiled == before.tc_tiled);
#if defined(AE_EMULATED_DEVICE)
  CHECK(emu::async_copy_stats().issued > issued);
#endif
  CHECK(test::bitwise_equal(y_auto, forward_with(ConvForwardKernel::tiled, p, x, w)));

  // C = 3 (not a multiple of 4): a forced pipelined kernel takes the 4-byte variant, same bits as
  // the tiled kernel; the automatic choice pads x and w to 4 channels first (the stem path,
  // conv_backward.h) and gives the wide kernel's bits on the padded tensors.
  const ConvCase c3{1, 6, 5, 3, 5, 3, 1, 1};
  const Tensor x3_host = test::random_tensor({c3.n, c3.h, c3.w, c3.c}, 73);
  const Tensor w3_host = test::random_tensor({c3.o, c3.k, c3.k, c3.c}, 74);
  const Tensor x3 = to_device(x3_host), w3 = to_device(w3_host);
  CHECK(cuda::conv_forward_pipelined_supported(ConvGeometry(p, x3.shape(), c3.o), x3.f32(), w3.f32()));
  CHECK_FALSE(cuda::conv_forward_pipelined_wide(ConvGeometry(p, x3.shape(), c3.o), x3.f32(), w3.f32()));
  before = cuda::conv_forward_launches();
  const Tensor y3_narrow = forward_with(ConvForwardKernel::pipelined_64x64, p, x3, w3);
  after = cuda::conv_forward_launches();
  CHECK(after.pipelined_4byte - before.pipelined_4byte == 1);
  CHECK(after.stem_padded == before.stem_padded);
  CHECK(test::bitwise_equal(y3_narrow, forward_with(ConvForwardKernel::tiled, p, x3, w3)));
  before = cuda::conv_forward_launches();
  const Tensor y3 = ops::conv2d_forward(p, x3, w3);
  after = cuda::conv_forward_launches();
  CHECK(after.stem_padded - before.stem_padded == 1);
  CHECK(after.pipelined_64x64 - before.pipelined_64x64 == 1);
  CHECK(after.pipelined_4byte == before.pipelined_4byte);
  const Tensor x4 = to_device(pad_channels_on_host(x3_host)), w4 = to_device(pad_channels_on_host(w3_host));
  CHECK(test::bitwise_equal(y3, forward_with(ConvForwardKernel::pipelined_64x64, p, x4, w4)));
  test::require_cuda_close(y3, ops::conv2d_forward(p, x3_host, w3_host), {0.5, 0.05, 1e-3}, "stem path");
  // The stem path's weight as the kernel reads it: rows of 9 taps x 4 channels padded to 40 floats
  // (32-byte multiples), the fourth channel and the row's tail zero.
  REQUIRE(cuda::stem_weight_row(9) == 40);
  CHECK(cuda::stem_weight_row(49) == 200);
  CHECK(cuda::stem_weight_row(2) == 8);
  const Tensor w_rows = cuda::pad_stem_weight(w3).to(Device::cpu());
  REQUIRE(w_rows.shape() == Shape{c3.o, 40});
  for (int64_t o = 0; o < c3.o; ++o) {
    for (int64_t j = 0; j < 40; ++j) {
      const float want = j < 36 && j % 4 < 3 ? w3_host.f32()[o * 27 + j / 4 * 3 + j % 4] : 0.0f;
      REQUIRE(w_rows.f32()[o * 40 + j] == want);
    }
  }
  test::require_error([&] { (void)cuda::pad_stem_weight(x); }, {"pad_stem_weight", "[O, KH, KW, 3]"});

  // x as a view one float into its storage: not 16-byte aligned, so 4-byte copies even with C = 8.
  const Tensor storage = to_device(test::random_tensor({1 + c.n * c.h * c.w * c.c}, 75));
  const Tensor x_odd = storage.view(1, {c.n, c.h, c.w, c.c});
  CHECK_FALSE(cuda::conv_forward_pipelined_wide(ConvGeometry(p, x_odd.shape(), c.o), x_odd.f32(), w.f32()));
  before = cuda::conv_forward_launches();
  const Tensor y_odd = ops::conv2d_forward(p, x_odd, w);
  after = cuda::conv_forward_launches();
  CHECK(after.pipelined_4byte - before.pipelined_4byte == 1);
  CHECK(test::bitwise_equal(y_odd, forward_with(ConvForwardKernel::tiled, p, x_odd, w)));

  // f32 math never takes a tensor-core kernel.
  {
    const cuda::ScopedConvMath f32(ConvMath::f32);
    before = cuda::conv_forward_launches();
    (void)ops::conv2d_forward(p, x, w);
    after = cuda::conv_forward_launches();
    CHECK(after.f32_tiled - before.f32_tiled == 1);
    CHECK(after.pipelined_64x64 == before.pipelined_64x64);
  }
  require_guards_intact();
}
