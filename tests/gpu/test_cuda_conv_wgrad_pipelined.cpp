// The pipelined implicit-GEMM tensor-core conv backward-weight (kernels/cuda/conv_wgrad_igemm.cu:
// the cp.async ring of the forward with [k][row] stages, split-K over grid.z) must give the same
// bits as the generic tensor-core tiled GEMM (tiled_gemm_tc.h with conv_backward.cu's DyTransposed /
// InputUnderTap loaders) it replaces, in tf32 and bf16, with both block tilings (64x64 and
// 128x128), over the awkward sweep of tests/gpu/conv_cases.h (1x1 and odd spatial sizes, kernels
// 1/3/7, strides 1/2, padding 0..3, channel counts 1..65, N*OH*OW down to 1) plus shapes of its own:
// the C = 3 stem (7x7 stride 2: 4-byte copies of x, 16-byte copies of dy), odd C and C % 4 != 0
// with O % 4 == 0, a 1x1 stride-2 downsample, O and KH*KW*C past one 128 tile, per-axis kernel /
// stride / padding, and reductions that split into several K slices, with a ragged last slice
// (not a multiple of 64 rows), a last slice shorter than one 32-row tile, and rounding that drops a
// slice; dy and x as views at an odd offset (4-byte copies with O, C % 4 == 0).
//
// Bitwise equality is the right test: per weight element and slice both kernels feed the same
// operand words (dy and x values, or 0) to the same mma instructions over the same k-steps
// (r = (n, oh, ow) increasing, each slice rounded up to 64) in the same order, and the same slice
// sum follows (conv_wgrad_igemm.cu, top). Outputs start poisoned (NaN) and buffers have red zones
// (gpu_harness.h); each result is also compared loosely with the CPU float32 backward-weight, so
// two equally unwritten outputs cannot pass. The launch counters prove which kernel ran (one GEMM
// launch per call) and with which copy width, and that the forced-tiled reference really ran tiled.
#include <doctest/doctest.h>

#include <sstream>
#include <vector>

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
using cuda::ConvBackwardWeightKernel;
using cuda::ConvMath;

namespace {

// A convolution with per-axis kernel, stride and padding.
struct WgradCase {
  Shape x;  // [N, H, W, C]
  int64_t o;
  int kh, kw, sh, sw, ph, pw;
};

ops::Conv2dParams params_of(const WgradCase& c) {
  ops::Conv2dParams p;
  p.kernel_h = c.kh, p.kernel_w = c.kw, p.stride_h = c.sh, p.stride_w = c.sw, p.pad_h = c.ph, p.pad_w = c.pw;
  return p;
}

Shape dy_shape_of(const WgradCase& c) {
  const ops::Conv2dParams p = params_of(c);
  return {c.x[0], p.out_h(c.x[1]), p.out_w(c.x[2]), c.o};
}

Shape w_shape_of(const WgradCase& c) { return {c.o, c.kh, c.kw, c.x[3]}; }

std::vector<WgradCase> all_cases() {
  std::vector<WgradCase> cases;
  for (const ConvCase& c : kConvSweep) {
    cases.push_back({{c.n, c.h, c.w, c.c}, c.o, c.k, c.k, c.stride, c.stride, c.pad, c.pad});
  }
  const WgradCase own[] = {
      {{1, 14, 14, 3}, 64, 7, 7, 2, 2, 3, 3},   // the stem in small: J = 147 (past 128), 4-byte x, 16-byte dy
      {{2, 7, 7, 6}, 8, 3, 3, 1, 1, 1, 1},      // C % 4 != 0 (even), O % 4 == 0
      {{1, 9, 8, 7}, 12, 3, 3, 2, 2, 1, 1},     // odd C, stride 2
      {{2, 8, 8, 64}, 132, 1, 1, 2, 2, 0, 0},   // 1x1 stride-2 downsample, O = 132 past one 128 tile
      {{1, 5, 5, 4}, 130, 3, 3, 1, 1, 1, 1},    // O = 130: 4-byte dy copies past one 128 tile
      {{4, 13, 25, 4}, 4, 1, 1, 1, 1, 0, 0},    // R = 1300: 5 slices of 320, the last 20 (< one 32-row tile)
      {{4, 35, 11, 4}, 4, 1, 1, 1, 1, 0, 0},    // R = 1540: 6 slices wanted, 5 of 320 after rounding, the last 260
      {{2, 16, 16, 4}, 32, 3, 3, 1, 1, 1, 1},   // R = 512: 2 whole slices of 256, 16-byte copies of both
      {{2, 7, 5, 3}, 4, 3, 1, 2, 1, 1, 0},      // per-axis: 3x1 kernel, stride 2x1
      {{1, 5, 13, 5}, 8, 1, 7, 1, 2, 0, 3},     // 1x7, stride 1x2, padding 0x3
      {{1, 9, 8, 2}, 5, 3, 3, 3, 2, 1, 0},      // stride 3x2
  };
  cases.insert(cases.end(), std::begin(own), std::end(own));
  return cases;
}

std::string describe(const Precision& pr, const WgradCase& c) {
  std::ostringstream os;
  os << pr.name << " x " << shape_str(c.x) << " o " << c.o << " k " << c.kh << "x" << c.kw << " stride " << c.sh
     << "x" << c.sw << " pad " << c.ph << "x" << c.pw;
  return os.str();
}

// The K slices conv2d_backward_weight splits N*OH*OW into (conv_backward.cu) and the last one's length.
struct Slices {
  int64_t count, last;
};
Slices slices_of(const WgradCase& c) {
  const Shape dy = dy_shape_of(c);
  const int64_t rows = dy[0] * dy[1] * dy[2], j = c.kh * c.kw * c.x[3];
  const int64_t wanted = cuda::conv_wgrad_split_count(rows, (c.o + 63) / 64 * ((j + 63) / 64));
  const int64_t per = ((rows + wanted - 1) / wanted + 63) / 64 * 64;
  const int64_t count = (rows + per - 1) / per;
  return {count, rows - (count - 1) * per};
}

int64_t total(const cuda::ConvBackwardWeightLaunches& l) {
  return l.f32_tiled + l.tc_tiled + l.pipelined_64x64 + l.pipelined_128x128;
}

int64_t launches_of(ConvBackwardWeightKernel k) {
  const cuda::ConvBackwardWeightLaunches l = cuda::conv_backward_weight_launches();
  switch (k) {
    case ConvBackwardWeightKernel::tiled: return l.tc_tiled;
    case ConvBackwardWeightKernel::pipelined_64x64: return l.pipelined_64x64;
    case ConvBackwardWeightKernel::pipelined_128x128: return l.pipelined_128x128;
    case ConvBackwardWeightKernel::automatic: break;
  }
  return -1;
}

// conv2d_backward_weight with kernel `k` forced; checks that exactly that kernel ran, once.
Tensor wgrad_with(ConvBackwardWeightKernel k, const WgradCase& c, const Tensor& x, const Tensor& dy) {
  const cuda::ScopedConvBackwardWeightKernel force(k);
  const int64_t total_before = total(cuda::conv_backward_weight_launches()), mine = launches_of(k);
  Tensor dw = ops::conv2d_backward_weight(params_of(c), x, dy, w_shape_of(c));
  CHECK(launches_of(k) - mine == 1);
  CHECK(total(cuda::conv_backward_weight_launches()) - total_before == 1);
  return dw;
}

}  // namespace

TEST_CASE("pipelined tensor-core conv backward-weight is bitwise equal to the tiled tensor-core kernel") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 1200;
  bool wide_seen = false, narrow_x_seen = false, narrow_dy_seen = false, split_seen = false, ragged_seen = false;
  for (const WgradCase& c : all_cases()) {
    const ops::Conv2dParams p = params_of(c);
    const Tensor x = test::random_tensor(c.x, seed++);
    const Tensor dy = test::random_tensor(dy_shape_of(c), seed++);
    const Tensor ref = ops::conv2d_backward_weight(p, x, dy, w_shape_of(c));  // CPU float32: a sanity bound
    const Tensor xd = to_device(x), dyd = to_device(dy);
    const bool wide_x = c.x[3] % 4 == 0, wide_dy = c.o % 4 == 0;
    wide_seen = wide_seen || (wide_x && wide_dy);
    narrow_x_seen = narrow_x_seen || !wide_x;
    narrow_dy_seen = narrow_dy_seen || !wide_dy;
    const Slices sl = slices_of(c);
    split_seen = split_seen || sl.count > 1;
    ragged_seen = ragged_seen || (sl.count > 1 && sl.last % 64 != 0);
    for (const Precision& pr : kPrecisions) {
      const cuda::ScopedConvMath mode(pr.math);
      const std::string what = describe(pr, c) + " slices " + std::to_string(sl.count);
      INFO(what);
      REQUIRE(cuda::conv_backward_weight_pipelined_supported(ConvGeometry(p, c.x, c.o), xd.f32(), dyd.f32()));
      const Tensor tiled = wgrad_with(ConvBackwardWeightKernel::tiled, c, xd, dyd);
      const int64_t narrow_before = cuda::conv_backward_weight_launches().pipelined_4byte;
      const Tensor small = wgrad_with(ConvBackwardWeightKernel::pipelined_64x64, c, xd, dyd);
      const Tensor large = wgrad_with(ConvBackwardWeightKernel::pipelined_128x128, c, xd, dyd);
      CHECK(cuda::conv_backward_weight_launches().pipelined_4byte - narrow_before == (wide_x && wide_dy ? 0 : 2));
      REQUIRE(small.shape() == ref.shape());
      CHECK(test::bitwise_equal(small, tiled));
      CHECK(test::bitwise_equal(large, tiled));
      test::require_cuda_close(tiled, ref, {0.5, 0.05, 1e-3}, what);
      test::require_cuda_close(small, ref, {0.5, 0.05, 1e-3}, what);
      require_guards_intact();
    }
  }
  CHECK(wide_seen);
  CHECK(narrow_x_seen);
  CHECK(narrow_dy_seen);
  CHECK(split_seen);
  CHECK(ragged_seen);
#if defined(AE_EMULATED_DEVICE)
  CHECK(emu::async_copy_take_leaks().empty());
#endif
}

TEST_CASE("conv backward-weight kernel choice: automatic takes the pipelined kernel; f32 and forced tiled do not") {
  AE_GPU_TEST_PRELUDE();
  const cuda::ScopedConvMath mode(ConvMath::tf32);
  const cuda::ScopedConvBackwardWeightKernel automatic(ConvBackwardWeightKernel::automatic);
  const WgradCase c{{2, 17, 17, 8}, 12, 3, 3, 1, 1, 1, 1};  // R = 578: two slices
  REQUIRE(slices_of(c).count == 2);
  const ops::Conv2dParams p = params_of(c);
  const Shape dy_shape = dy_shape_of(c);
  const Tensor x = to_device(test::random_tensor(c.x, 91));
  const Tensor dy = to_device(test::random_tensor(dy_shape, 92));

  // Supported, small grid: the 64x64 pipelined kernel, 16-byte cp.async.
#if defined(AE_EMULATED_DEVICE)
  const std::size_t issued = emu::async_copy_stats().issued;
#endif
  cuda::ConvBackwardWeightLaunches before = cuda::conv_backward_weight_launches();
  const Tensor dw_auto = ops::conv2d_backward_weight(p, x, dy, w_shape_of(c));
  cuda::ConvBackwardWeightLaunches after = cuda::conv_backward_weight_launches();
  CHECK(after.pipelined_64x64 - before.pipelined_64x64 == 1);
  CHECK(after.pipelined_4byte == before.pipelined_4byte);
  CHECK(total(after) - total(before) == 1);
#if defined(AE_EMULATED_DEVICE)
  CHECK(emu::async_copy_stats().issued > issued);
#endif
  CHECK(test::bitwise_equal(dw_auto, wgrad_with(ConvBackwardWeightKernel::tiled, c, x, dy)));

  // dy, then x, as a view one float into its storage: not 16-byte aligned, so 4-byte copies of that
  // operand even with O, C % 4 == 0.
  const Tensor dy_storage = to_device(test::random_tensor({1 + shape_numel(dy_shape)}, 93));
  const Tensor x_storage = to_device(test::random_tensor({1 + shape_numel(c.x)}, 94));
  const Tensor dy_odd = dy_storage.view(1, dy_shape), x_odd = x_storage.view(1, c.x);
  for (const bool odd_x : {false, true}) {
    const Tensor& xs = odd_x ? x_odd : x;
    const Tensor& dys = odd_x ? dy : dy_odd;
    before = cuda::conv_backward_weight_launches();
    const Tensor dw_odd = ops::conv2d_backward_weight(p, xs, dys, w_shape_of(c));
    after = cuda::conv_backward_weight_launches();
    CHECK(after.pipelined_64x64 - before.pipelined_64x64 == 1);
    CHECK(after.pipelined_4byte - before.pipelined_4byte == 1);
    CHECK(test::bitwise_equal(dw_odd, wgrad_with(ConvBackwardWeightKernel::tiled, c, xs, dys)));
  }

  // f32 math never takes a tensor-core kernel, whatever is forced.
  {
    const cuda::ScopedConvMath f32(ConvMath::f32);
    const cuda::ScopedConvBackwardWeightKernel forced(ConvBackwardWeightKernel::pipelined_128x128);
    before = cuda::conv_backward_weight_launches();
    (void)ops::conv2d_backward_weight(p, x, dy, w_shape_of(c));
    after = cuda::conv_backward_weight_launches();
    CHECK(after.f32_tiled - before.f32_tiled == 1);
    CHECK(total(after) - total(before) == 1);
  }
  require_guards_intact();
}

TEST_CASE("the C = 3 stem's backward-weight runs on x padded to 4 channels, with the 4-byte kernel's bits") {
  AE_GPU_TEST_PRELUDE();
  // The stem in small, unsplit and split into K slices (the slices are the unpadded problem's).
  const WgradCase cases[] = {{{1, 14, 14, 3}, 64, 7, 7, 2, 2, 3, 3}, {{2, 46, 30, 3}, 8, 7, 7, 2, 2, 3, 3}};
  bool split_seen = false;
  uint64_t seed = 1500;
  for (const WgradCase& c : cases) {
    split_seen = split_seen || slices_of(c).count > 1;
    const Tensor x = test::random_tensor(c.x, seed++);
    const Tensor dy = test::random_tensor(dy_shape_of(c), seed++);
    const Tensor ref = ops::conv2d_backward_weight(params_of(c), x, dy, w_shape_of(c));  // CPU float32
    const Tensor xd = to_device(x), dyd = to_device(dy);
    for (const Precision& pr : kPrecisions) {
      const std::string what = describe(pr, c) + " slices " + std::to_string(slices_of(c).count);
      INFO(what);
      const cuda::ScopedConvMath mode(pr.math);
      const cuda::ScopedConvBackwardWeightKernel automatic(ConvBackwardWeightKernel::automatic);
      const cuda::ConvBackwardWeightLaunches before = cuda::conv_backward_weight_launches();
      const Tensor dw = ops::conv2d_backward_weight(params_of(c), xd, dyd, w_shape_of(c));
      const cuda::ConvBackwardWeightLaunches after = cuda::conv_backward_weight_launches();
      CHECK(after.stem_padded - before.stem_padded == 1);
      CHECK(after.pipelined_4byte == before.pipelined_4byte);  // 16-byte copies of x and dy
      CHECK(total(after) - total(before) == 1);
      CHECK(dw.shape() == w_shape_of(c));
      // Per element the same products over the same k-steps and slices as the forced 4-byte kernel.
      const Tensor narrow = wgrad_with(ConvBackwardWeightKernel::pipelined_64x64, c, xd, dyd);
      CHECK(test::bitwise_equal(dw, narrow));
      test::require_cuda_close(dw, ref, {0.5, 0.05, 1e-3}, what);
    }
  }
  CHECK(split_seen);
  require_guards_intact();
}

#if defined(AE_EMULATED_DEVICE)
#include <cstdio>

#include "kernels/emu/profile.h"

// Not run by ctest (doctest skip): the emulated-device profile (docs/emulated_profile.md) of the
// pipelined backward-weight kernel and of the tiled tensor-core kernel it replaces, on a ResNet-18
// layer1 conv (3x3 64->64 at 28x28, batch 1) and a layer4 conv (3x3 512->512 at 7x7, batch 1), tf32
// and bf16. The counts are exact for what the emulated threads did; the times are roofline
// ESTIMATES. Needs a -DAE_EMU_PROFILE=ON build:
//   tests/gpu_test_cuda_conv_wgrad_pipelined --no-skip -tc='*profile*'
TEST_CASE("profile of the pipelined conv backward-weight on ResNet-18 layers (manual: --no-skip)" * doctest::skip()) {
  AE_GPU_TEST_PRELUDE();
  const WgradCase layers[] = {{{1, 28, 28, 64}, 64, 3, 3, 1, 1, 1, 1}, {{1, 7, 7, 512}, 512, 3, 3, 1, 1, 1, 1}};
  for (const WgradCase& c : layers) {
    const Tensor x = to_device(test::random_tensor(c.x, 1));
    const Tensor dy = to_device(test::random_tensor(dy_shape_of(c), 2));
    for (const Precision& pr : kPrecisions) {
      const cuda::ScopedConvMath mode(pr.math);
      for (const bool pipelined : {true, false}) {
        const cuda::ScopedConvBackwardWeightKernel k(pipelined ? ConvBackwardWeightKernel::automatic
                                                               : ConvBackwardWeightKernel::tiled);
        emu::profile_reset();
        emu::set_profiling(true);
        (void)ops::conv2d_backward_weight(params_of(c), x, dy, w_shape_of(c));
        emu::set_profiling(false);
        std::printf("\n### wgrad 3x3 %lld->%lld @%lld, batch 1, %s, %s kernel\n\n%s", static_cast<long long>(c.x[3]),
                    static_cast<long long>(c.o), static_cast<long long>(c.x[1]), pr.name,
                    pipelined ? "pipelined" : "tiled", emu::profile_table().c_str());
        emu::profile_reset();
      }
    }
  }
  require_guards_intact();
}
#endif
