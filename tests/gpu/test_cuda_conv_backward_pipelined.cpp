// The pipelined implicit-GEMM tensor-core conv backward-data (conv_implicit_gemm.cu, the forward's
// kernel with backward-data's gather, one launch per stride phase) must give the same bits as the
// generic tensor-core tiled GEMM (tiled_gemm_tc.h with conv_backward.cu's DyThroughTap /
// WeightByTapThenOut loaders) it replaces, in tf32 and bf16, with both block tilings (64x64 and
// 128x128), over the awkward sweep of tests/gpu/conv_cases.h (1x1 and odd spatial sizes, kernels
// 1/3/7, strides 1/2, padding 0..3, channel counts 1..65: O % 4 != 0 takes the 4-byte copies, O % 4
// == 0 the 16-byte ones) plus shapes of its own: C past one 128 tile, per-axis kernel / stride /
// padding (phases with different tap counts along h and w), pixels no output reads, phases without
// taps, and dy as a view at an odd offset (4-byte copies with O % 4 == 0).
//
// Bitwise equality is the right test: per output element both kernels feed the same operand words
// (dy and w values, or 0) to the same mma instructions over the same k-steps (k = (th, tw, o), o
// fastest, one K slice rounded up to 64) in the same order (conv_implicit_gemm.cu, top). Outputs
// start poisoned (NaN) and buffers have red zones (gpu_harness.h); each result is also compared with
// the CPU float32 backward-data (loosely: the precision is test_cuda_conv_tc's business), so two
// equally unwritten outputs cannot pass. The launch counters prove which kernel ran, once per stride
// phase with pixels, and with which copy width.
#include <doctest/doctest.h>

#include <algorithm>
#include <sstream>
#include <vector>

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
using cuda::ConvBackwardDataKernel;
using cuda::ConvMath;

namespace {

// A convolution with per-axis kernel, stride and padding.
struct DgradCase {
  Shape x;  // [N, H, W, C]
  int64_t o;
  int kh, kw, sh, sw, ph, pw;
};

ops::Conv2dParams params_of(const DgradCase& c) {
  ops::Conv2dParams p;
  p.kernel_h = c.kh, p.kernel_w = c.kw, p.stride_h = c.sh, p.stride_w = c.sw, p.pad_h = c.ph, p.pad_w = c.pw;
  return p;
}

std::vector<DgradCase> all_cases() {
  std::vector<DgradCase> cases;
  for (const ConvCase& c : kConvSweep) {
    cases.push_back({{c.n, c.h, c.w, c.c}, c.o, c.k, c.k, c.stride, c.stride, c.pad, c.pad});
  }
  const DgradCase own[] = {
      {{1, 7, 6, 68}, 8, 3, 3, 2, 2, 1, 1},    // O % 4 == 0 at stride 2: 16-byte copies in every phase
      {{2, 5, 4, 130}, 12, 3, 3, 1, 1, 1, 1},  // C = 130: past one 128 tile of columns (N of the GEMM)
      {{2, 9, 8, 8}, 36, 3, 3, 1, 1, 1, 1},    // M = 144: past one 128 tile of rows; K = 324, ragged
      {{2, 7, 5, 3}, 4, 3, 1, 2, 1, 1, 0},     // per-axis: 3x1 kernel, stride 2x1
      {{1, 5, 13, 5}, 8, 1, 7, 1, 2, 0, 3},    // 1x7, stride 1x2, padding 0x3
      {{1, 9, 8, 2}, 5, 3, 3, 3, 2, 1, 0},     // stride 3x2: six phases, some with fewer taps
      {{2, 6, 6, 4}, 16, 1, 1, 2, 2, 0, 0},    // 1x1 stride 2: three of four phases have no tap (zeros)
      {{1, 5, 5, 4}, 8, 2, 2, 3, 3, 0, 0},     // stride 3 > kernel 2: phases with pixels and no tap
  };
  cases.insert(cases.end(), std::begin(own), std::end(own));
  return cases;
}

std::string describe(const Precision& pr, const DgradCase& c) {
  std::ostringstream os;
  os << pr.name << " x " << shape_str(c.x) << " o " << c.o << " k " << c.kh << "x" << c.kw << " stride " << c.sh
     << "x" << c.sw << " pad " << c.ph << "x" << c.pw;
  return os.str();
}

// Stride phases with at least one input pixel: the launches one backward-data makes.
int64_t phases_with_pixels(const DgradCase& c) {
  return std::min<int64_t>(c.sh, c.x[1]) * std::min<int64_t>(c.sw, c.x[2]);
}

int64_t total(const cuda::ConvBackwardDataLaunches& l) {
  return l.f32_tiled + l.tc_tiled + l.pipelined_64x64 + l.pipelined_128x128;
}

int64_t launches_of(ConvBackwardDataKernel k) {
  const cuda::ConvBackwardDataLaunches l = cuda::conv_backward_data_launches();
  switch (k) {
    case ConvBackwardDataKernel::tiled: return l.tc_tiled;
    case ConvBackwardDataKernel::pipelined_64x64: return l.pipelined_64x64;
    case ConvBackwardDataKernel::pipelined_128x128: return l.pipelined_128x128;
    case ConvBackwardDataKernel::automatic: break;
  }
  return -1;
}

// conv2d_backward_data with kernel `k` forced; checks that exactly that kernel ran, once per phase.
Tensor dgrad_with(ConvBackwardDataKernel k, const DgradCase& c, const Tensor& dy, const Tensor& w) {
  const cuda::ScopedConvBackwardDataKernel force(k);
  const int64_t total_before = total(cuda::conv_backward_data_launches()), mine = launches_of(k);
  Tensor dx = ops::conv2d_backward_data(params_of(c), dy, w, c.x);
  CHECK(launches_of(k) - mine == phases_with_pixels(c));
  CHECK(total(cuda::conv_backward_data_launches()) - total_before == phases_with_pixels(c));
  return dx;
}


}  // namespace

TEST_CASE("pipelined tensor-core conv backward-data is bitwise equal to the tiled tensor-core kernel") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 800;
  bool wide_seen = false, narrow_seen = false, strided_seen = false;
  for (const DgradCase& c : all_cases()) {
    const ops::Conv2dParams p = params_of(c);
    const Tensor w = test::random_tensor({c.o, c.kh, c.kw, c.x[3]}, seed++);
    const Tensor dy = test::random_tensor({c.x[0], p.out_h(c.x[1]), p.out_w(c.x[2]), c.o}, seed++);
    const Tensor ref = ops::conv2d_backward_data(p, dy, w, c.x);  // CPU float32: a sanity bound below
    const Tensor dyd = to_device(dy), wd = to_device(w);
    const bool wide = c.o % 4 == 0;
    wide_seen = wide_seen || wide;
    narrow_seen = narrow_seen || !wide;
    strided_seen = strided_seen || phases_with_pixels(c) > 1;
    for (const Precision& pr : kPrecisions) {
      const cuda::ScopedConvMath mode(pr.math);
      const std::string what = describe(pr, c);
      INFO(what);
      // (dx, not yet allocated, stands as nullptr: a fresh allocation is aligned like it)
      REQUIRE(cuda::conv_backward_data_pipelined_enabled(pr.math, ConvGeometry(p, c.x, c.o), dyd.f32(), nullptr));
      const Tensor tiled = dgrad_with(ConvBackwardDataKernel::tiled, c, dyd, wd);
      const int64_t narrow_before = cuda::conv_backward_data_launches().pipelined_4byte;
      const Tensor small = dgrad_with(ConvBackwardDataKernel::pipelined_64x64, c, dyd, wd);
      const Tensor large = dgrad_with(ConvBackwardDataKernel::pipelined_128x128, c, dyd, wd);
      CHECK(cuda::conv_backward_data_launches().pipelined_4byte - narrow_before ==
            (wide ? 0 : 2 * phases_with_pixels(c)));
      REQUIRE(small.shape() == ref.shape());
      CHECK(test::bitwise_equal(small, tiled));
      CHECK(test::bitwise_equal(large, tiled));
      test::require_cuda_close(tiled, ref, {0.25, 0.05, 1e-3}, what);
      test::require_cuda_close(small, ref, {0.25, 0.05, 1e-3}, what);
      require_guards_intact();
    }
  }
  CHECK(wide_seen);
  CHECK(narrow_seen);
  CHECK(strided_seen);
#if defined(AE_EMULATED_DEVICE)
  CHECK(emu::async_copy_take_leaks().empty());
#endif
}

TEST_CASE("conv backward-data kernel choice: automatic takes the pipelined kernel; f32 and forced tiled do not") {
  AE_GPU_TEST_PRELUDE();
  const cuda::ScopedConvMath mode(ConvMath::bf16);
  const cuda::ScopedConvBackwardDataKernel automatic(ConvBackwardDataKernel::automatic);
  const DgradCase c{{2, 6, 5, 8}, 12, 3, 3, 2, 2, 1, 1};
  const ops::Conv2dParams p = params_of(c);
  const Shape dy_shape{c.x[0], p.out_h(c.x[1]), p.out_w(c.x[2]), c.o};
  const Tensor dy = to_device(test::random_tensor(dy_shape, 91));
  const Tensor w = to_device(test::random_tensor({c.o, c.kh, c.kw, c.x[3]}, 92));

  // Supported, small grid: the 64x64 pipelined kernel in each of the 4 phases, with 16-byte cp.async.
#if defined(AE_EMULATED_DEVICE)
  const std::size_t issued = emu::async_copy_stats().issued;
#endif
  cuda::ConvBackwardDataLaunches before = cuda::conv_backward_data_launches();
  const Tensor dx_auto = ops::conv2d_backward_data(p, dy, w, c.x);
  cuda::ConvBackwardDataLaunches after = cuda::conv_backward_data_launches();
  CHECK(after.pipelined_64x64 - before.pipelined_64x64 == 4);
  CHECK(after.pipelined_4byte == before.pipelined_4byte);
  CHECK(total(after) - total(before) == 4);
#if defined(AE_EMULATED_DEVICE)
  CHECK(emu::async_copy_stats().issued > issued);
#endif
  CHECK(test::bitwise_equal(dx_auto, dgrad_with(ConvBackwardDataKernel::tiled, c, dy, w)));

  // dy as a view one float into its storage: not 16-byte aligned, so 4-byte copies even with O % 4 == 0.
  const Tensor storage = to_device(test::random_tensor({1 + shape_numel(dy_shape)}, 93));
  const Tensor dy_odd = storage.view(1, dy_shape);
  before = cuda::conv_backward_data_launches();
  const Tensor dx_odd = ops::conv2d_backward_data(p, dy_odd, w, c.x);
  after = cuda::conv_backward_data_launches();
  CHECK(after.pipelined_64x64 - before.pipelined_64x64 == 4);
  CHECK(after.pipelined_4byte - before.pipelined_4byte == 4);
  CHECK(test::bitwise_equal(dx_odd, dgrad_with(ConvBackwardDataKernel::tiled, c, dy_odd, w)));

  // f32 math never takes a tensor-core kernel, whatever is forced.
  {
    const cuda::ScopedConvMath f32(ConvMath::f32);
    const cuda::ScopedConvBackwardDataKernel forced(ConvBackwardDataKernel::pipelined_128x128);
    before = cuda::conv_backward_data_launches();
    (void)ops::conv2d_backward_data(p, dy, w, c.x);
    after = cuda::conv_backward_data_launches();
    CHECK(after.f32_tiled - before.f32_tiled == 4);
    CHECK(total(after) - total(before) == 4);
  }
  require_guards_intact();
}

#if defined(AE_EMULATED_DEVICE)
#include <cstdio>

#include "kernels/emu/profile.h"

// Not run by ctest (doctest skip): the emulated-device profile (docs/emulated_profile.md) of the
// pipelined forward and backward-data kernels and of the tiled tensor-core kernels they replace, on
// one ResNet-18 layer (3x3 64->64 at 28x28, batch 1), tf32 and bf16. The counts are exact for what the
// emulated threads did; the times are roofline ESTIMATES. Needs a -DAE_EMU_PROFILE=ON build:
//   tests/gpu_test_cuda_conv_backward_pipelined --no-skip -tc='*profile*'
TEST_CASE("profile of the pipelined conv kernels on a ResNet-18 layer (manual: --no-skip)" * doctest::skip()) {
  AE_GPU_TEST_PRELUDE();
  const DgradCase c{{1, 28, 28, 64}, 64, 3, 3, 1, 1, 1, 1};
  const ops::Conv2dParams p = params_of(c);
  const Tensor x = to_device(test::random_tensor(c.x, 1));
  const Tensor w = to_device(test::random_tensor({c.o, c.kh, c.kw, c.x[3]}, 2));
  const Tensor dy = to_device(test::random_tensor({1, 28, 28, c.o}, 3));
  for (const Precision& pr : kPrecisions) {
    const cuda::ScopedConvMath mode(pr.math);
    for (const bool pipelined : {true, false}) {
      const cuda::ScopedConvForwardKernel fwd(pipelined ? cuda::ConvForwardKernel::automatic
                                                        : cuda::ConvForwardKernel::tiled);
      const cuda::ScopedConvBackwardDataKernel bwd(pipelined ? ConvBackwardDataKernel::automatic
                                                             : ConvBackwardDataKernel::tiled);
      emu::profile_reset();
      emu::set_profiling(true);
      (void)ops::conv2d_forward(p, x, w);
      (void)ops::conv2d_backward_data(p, dy, w, c.x);
      emu::set_profiling(false);
      std::printf("\n### layer1 3x3 64->64 @28, batch 1, %s, %s kernels\n\n%s", pr.name,
                  pipelined ? "pipelined" : "tiled", emu::profile_table().c_str());
      emu::profile_reset();
    }
  }
  require_guards_intact();
}
#endif
