// conv2d_forward on bf16 x and w (kernels/cuda/conv_implicit_gemm.h, "bf16 storage"). In bf16 math
// the pipelined kernel stages the bf16 operands as they are (8 per 16-byte cp.async, 64 k per
// stage row, fragments by ldmatrix, no rounding); its output must be bitwise the f32-storage bf16
// kernel's on the widened operands, since both feed the same registers to the same mma k-steps:
// a wrong ldmatrix matrix order, a 64-wide k step that skips or repeats k, a missed zero-fill or a
// chunk that straddles a tap would all change bits. Checked with both tilings, under split-K and
// with the statistics epilogue, over awkward shapes (C % 8 == 0: 8, 16, 64, 72, 136; K ragged
// against 64; M and O past the tiles, O odd; 1x1, 3x3, 7x7; stride 2; all-padding patches).
// Everything the kernel does not take (C % 8 != 0, an unaligned view, f32 and tf32 math, a forced
// tiled kernel) is widened to f32 first and must give the widened operands' bits too. Launch
// counters prove which path ran. Outputs start poisoned and buffers have red zones (gpu_harness.h).
#include <doctest/doctest.h>

#include <sstream>

#include "kernels/cuda/conv_implicit_gemm.h"
#include "kernels/cuda/conv_math.h"
#include "kernels/cuda/conv_stats.h"
#include "kernels/ops.h"
#include "tests/gpu/conv_cases.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using namespace ae::gputest;
using cuda::ConvForwardKernel;
using cuda::ConvMath;

namespace {

// {n, h, w, c, o, k, stride, pad}; every C % 8 == 0 (the bf16-storage kernel's condition).
const ConvCase kCases[] = {
    {1, 5, 7, 8, 5, 3, 1, 1},      // K = 72: one whole 64-wide stage and a ragged one (zero steps)
    {3, 6, 5, 8, 9, 3, 2, 0},      // batch 3, stride 2, odd O
    {1, 9, 9, 64, 70, 1, 1, 0},    // 1x1: M = 81 and O = 70 past one 64 tile
    {1, 7, 6, 72, 13, 3, 2, 1},    // C = 72: taps start mid-stage, K = 648
    {1, 11, 9, 16, 16, 7, 2, 3},   // 7x7, padding 3: rows of pure padding
    {2, 9, 8, 16, 130, 3, 1, 1},   // M = 144, O = 130: past one 128 tile in both directions
    {2, 3, 3, 8, 3, 3, 1, 2},      // padding 2 on a 3x3 image: outputs whose whole patch is padding
    {1, 4, 4, 136, 7, 3, 1, 1},    // C = 136: 17 chunks per pixel
};

std::string describe(const ConvCase& c) {
  std::ostringstream os;
  os << "x [" << c.n << "," << c.h << "," << c.w << "," << c.c << "] o " << c.o << " k " << c.k << " stride "
     << c.stride << " pad " << c.pad;
  return os.str();
}

struct Operands {
  Tensor xb, wb;  // bf16 on the device
  Tensor xw, ww;  // the same values widened to f32 on the device
};

Operands operands(const ConvCase& c, uint64_t seed) {
  Operands o;
  o.xb = ops::cast(to_device(test::random_tensor({c.n, c.h, c.w, c.c}, seed)), DType::bf16);
  o.wb = ops::cast(to_device(test::random_tensor({c.o, c.k, c.k, c.c}, seed + 1)), DType::bf16);
  o.xw = ops::cast(o.xb, DType::f32);
  o.ww = ops::cast(o.wb, DType::f32);
  return o;
}

// conv2d_forward on bf16 operands; checks it ran the bf16-storage kernel (expect_storage) or
// widened them, exactly once.
Tensor forward_bf16(const ops::Conv2dParams& p, const Tensor& xb, const Tensor& wb, bool expect_storage) {
  const cuda::ConvForwardLaunches before = cuda::conv_forward_launches();
  Tensor y = ops::conv2d_forward(p, xb, wb);
  const cuda::ConvForwardLaunches after = cuda::conv_forward_launches();
  CHECK(after.pipelined_bf16_storage - before.pipelined_bf16_storage == (expect_storage ? 1 : 0));
  CHECK(after.bf16_widened - before.bf16_widened == (expect_storage ? 0 : 1));
  CHECK(y.dtype() == DType::f32);
  return y;
}

}  // namespace

TEST_CASE("bf16-storage conv forward is bitwise the f32-storage bf16 kernel on the widened operands") {
  AE_GPU_TEST_PRELUDE();
  const cuda::ScopedConvMath mode(ConvMath::bf16);
  uint64_t seed = 700;
  for (const ConvCase& c : kCases) {
    const ops::Conv2dParams p = params_of(c);
    const Operands o = operands(c, seed);
    seed += 2;
    INFO(describe(c));
    for (ConvForwardKernel k : {ConvForwardKernel::pipelined_64x64, ConvForwardKernel::pipelined_128x128,
                                ConvForwardKernel::automatic}) {
      const cuda::ScopedConvForwardKernel force(k);
      const int64_t large_before = cuda::conv_forward_launches().pipelined_128x128;
      const Tensor ours = forward_bf16(p, o.xb, o.wb, true);
      const int64_t large_after = cuda::conv_forward_launches().pipelined_128x128;
      if (k == ConvForwardKernel::pipelined_128x128) CHECK(large_after - large_before == 1);
      if (k == ConvForwardKernel::pipelined_64x64) CHECK(large_after - large_before == 0);
      CHECK(test::bitwise_equal(ours, ops::conv2d_forward(p, o.xw, o.ww)));
    }
    // Not a vacuous equality: the result is the convolution of the bf16 values (products exact,
    // f32 accumulation against the CPU's f32 sums).
    const Tensor cpu = ops::conv2d_forward(p, o.xw.to(Device::cpu()), o.ww.to(Device::cpu()));
    test::require_cuda_close(ops::conv2d_forward(p, o.xb, o.wb), cpu, {1e-4, 1e-4, 1e-8}, describe(c));
    require_guards_intact();
  }
}

TEST_CASE("bf16-storage conv forward under split-K and with the statistics epilogue keeps the f32-storage bits") {
  AE_GPU_TEST_PRELUDE();
  const cuda::ScopedConvMath mode(ConvMath::bf16);
  const ConvCase c{2, 5, 5, 72, 24, 3, 1, 1};  // K = 648: slices of 64 * k
  const ops::Conv2dParams p = params_of(c);
  const Operands o = operands(c, 750);
  for (int64_t slices : {2, 3, 11}) {
    INFO("split-K asked for " << slices << " slices");
    const cuda::ScopedConvForwardSplitK split(slices);
    const cuda::ScopedConvForwardKernel force(ConvForwardKernel::pipelined_64x64);
    const int64_t split_before = cuda::conv_forward_launches().pipelined_split_k;
    const Tensor ours = forward_bf16(p, o.xb, o.wb, true);
    CHECK(cuda::conv_forward_launches().pipelined_split_k - split_before == 1);
    CHECK(test::bitwise_equal(ours, ops::conv2d_forward(p, o.xw, o.ww)));
  }
  // Statistics gathered in the epilogue (unsplit: a split-K forward takes a pass of its own): the
  // same per-tile partials as from the f32 storage.
  const cuda::ScopedConvForwardSplitK unsplit(1);
  const int64_t m = c.n * c.h * c.w;
  const int64_t doubles = cuda::conv_output_stats_doubles(m, c.o);
  Tensor buf_b = Tensor::zeros({doubles * 8}, DType::u8, device());
  Tensor buf_w = Tensor::zeros({doubles * 8}, DType::u8, device());
  cuda::ConvOutputStats sb{static_cast<double*>(buf_b.raw()), 0}, sw{static_cast<double*>(buf_w.raw()), 0};
  const cuda::ConvStatsLaunches before = cuda::conv_stats_launches();
  const Tensor yb = cuda::conv2d_forward_with_stats(p, o.xb, o.wb, sb);
  const Tensor yw = cuda::conv2d_forward_with_stats(p, o.xw, o.ww, sw);
  CHECK(cuda::conv_stats_launches().epilogue - before.epilogue == 2);
  CHECK(sb.tile_rows == sw.tile_rows);
  CHECK(test::bitwise_equal(yb, yw));
  CHECK(test::bitwise_equal(buf_b, buf_w));
  require_guards_intact();
}

TEST_CASE("bf16 operands the kernel does not take are widened, with the widened operands' bits") {
  AE_GPU_TEST_PRELUDE();
  // C = 3 (the stem), C = 12 (% 4, not % 8): widened in bf16 math, and compared with the
  // f32-storage kernels on the widened values (4-byte and 16-byte copies).
  for (const ConvCase& c : {ConvCase{1, 9, 9, 3, 8, 7, 2, 3}, ConvCase{2, 5, 4, 12, 7, 3, 1, 1}}) {
    INFO(describe(c));
    const cuda::ScopedConvMath mode(ConvMath::bf16);
    const ops::Conv2dParams p = params_of(c);
    const Operands o = operands(c, 800 + static_cast<uint64_t>(c.c));
    CHECK(test::bitwise_equal(forward_bf16(p, o.xb, o.wb, false), ops::conv2d_forward(p, o.xw, o.ww)));
  }
  const ConvCase c{1, 5, 7, 8, 5, 3, 1, 1};
  const ops::Conv2dParams p = params_of(c);
  const Operands o = operands(c, 810);
  for (ConvMath math : {ConvMath::f32, ConvMath::tf32}) {
    INFO("math " << cuda::conv_math_name(math));
    const cuda::ScopedConvMath mode(math);
    CHECK(test::bitwise_equal(forward_bf16(p, o.xb, o.wb, false), ops::conv2d_forward(p, o.xw, o.ww)));
  }
  {
    INFO("a forced tiled kernel");
    const cuda::ScopedConvMath mode(ConvMath::bf16);
    const cuda::ScopedConvForwardKernel force(ConvForwardKernel::tiled);
    CHECK(test::bitwise_equal(forward_bf16(p, o.xb, o.wb, false), ops::conv2d_forward(p, o.xw, o.ww)));
  }
  {
    INFO("a view of x 8 bytes past a 16-byte boundary");
    const cuda::ScopedConvMath mode(ConvMath::bf16);
    const Tensor big = ops::cast(to_device(test::random_tensor({2, 5, 7, 8}, 820)), DType::bf16);
    const Tensor xv = big.view(4, {1, 5, 7, 8});  // element 4: byte offset 8
    CHECK(test::bitwise_equal(forward_bf16(p, xv, o.wb, false),
                              ops::conv2d_forward(p, ops::cast(xv, DType::f32), o.ww)));
    const Tensor xa = big.view(8, {1, 5, 7, 8});  // byte offset 16: aligned, the kernel takes it
    CHECK(test::bitwise_equal(forward_bf16(p, xa, o.wb, true),
                              ops::conv2d_forward(p, ops::cast(xa, DType::f32), o.ww)));
  }
  require_guards_intact();
}

TEST_CASE("bf16 conv operands: one dtype for both; data gradients take f32 weights only") {
  AE_GPU_TEST_PRELUDE();
  const ConvCase c{1, 5, 5, 8, 4, 3, 1, 1};
  const ops::Conv2dParams p = params_of(c);
  const Operands o = operands(c, 830);
  test::require_error([&] { ops::conv2d_forward(p, o.xb, o.ww); }, {"conv2d_forward", "one dtype", "bf16", "f32"});
  test::require_error([&] { ops::conv2d_backward_data(p, ops::conv2d_forward(p, o.xw, o.ww), o.wb, o.xw.shape()); },
                      {"conv2d_backward_data", "w", "bf16", "must be f32"});
}
