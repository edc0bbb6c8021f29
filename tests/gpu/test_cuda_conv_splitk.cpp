// Split-K of the pipelined implicit-GEMM tensor-core conv forward (kernels/cuda/conv_implicit_gemm.cu,
// "Split-K"): K split over grid.z into slices of a whole number of 64-wide k-steps, each slice's
// partial y written to a workspace and summed in slice order (sum_conv_slices: double, rounded once).
//
// Split-K changes the summation order, so its result is NOT bitwise equal to the unsplit kernel's.
// What is bitwise checkable, and checked here on the emulated device:
//  - each slice's partial is bitwise what the unsplit kernel computes over that k range. The unsplit
//    kernel run on w with every weight outside the range set to zero computes exactly that: its
//    k-steps outside the range add exact zeros (acc + 0 = acc; the random data has no exactly-zero
//    nonzero-sign subtleties to speak of, and +0 partials stay +0), and tf32 / bf16 rounding of 0 is 0.
//    So y_split == float(sum over slices, in order, in double, of unsplit(w zeroed outside slice s)),
//    bit for bit. This pins the slice boundaries, each slice's (kh, kw, c) start (slices begin
//    mid-tap), the ragged last slice and the partial layout;
//  - two runs give the same bits, and the slices depend on the shape (and the setting) alone;
//  - with slices forced to 1 the result is bitwise the unsplit kernel's (and the tiled kernel's).
// Each split result is also compared with a double-accumulated CPU reference within the error bound
// of test_cuda_conv_tc (per element ((2u + u^2) + 3 K 2^-23) * sum |a b|, NMSE below 4u^2).
// Outputs start poisoned (NaN), buffers (the workspace too) have red zones (gpu_harness.h), and the
// launch counters prove which path ran. Shapes are layer4-like in small (7x7 spatial, 64 channels
// instead of 512) with the split count forced, plus the C = 3 stem (4-byte copies), odd C, O not a
// multiple of 64 (odd too), K not a multiple of the slice, a last slice shorter than one 32 tile,
// and slice counts that the 64-rounding reduces.
#include <doctest/doctest.h>

#include <cmath>
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
using cuda::ConvForwardKernel;
using cuda::ConvMath;

namespace {

struct SplitCase {
  ConvCase c;  // {n, h, w, c, o, k, stride, pad}
  int64_t forced;           // set_conv_forward_split_k
  int64_t slices;           // what the plan must give
  int64_t k_per_split;
  ConvForwardKernel kernel;  // pipelined tiling
  const char* why;
};

// K = k*k*C.
const SplitCase kCases[] = {
    {{1, 7, 7, 64, 64, 3, 1, 1}, 3, 3, 192, ConvForwardKernel::pipelined_64x64,
     "layer4 in small, batch 1: K = 576, 3 slices of one kernel row each"},
    {{1, 7, 7, 64, 64, 3, 1, 1}, 5, 5, 128, ConvForwardKernel::pipelined_64x64,
     "K = 576 in 5: slices of 128 starting mid-tap, the last 64"},
    {{2, 7, 7, 64, 72, 3, 1, 1}, 4, 3, 192, ConvForwardKernel::pipelined_128x128,
     "4 wanted, 3 after rounding to 64; O = 72 past one 64 tile; 128x128 tiles"},
    {{1, 5, 5, 68, 70, 3, 1, 1}, 3, 3, 256, ConvForwardKernel::pipelined_64x64,
     "C = 68, K = 612: slices of 256, the last 100 (K not a multiple of the slice)"},
    {{1, 9, 9, 3, 8, 7, 2, 3}, 2, 2, 128, ConvForwardKernel::pipelined_64x64,
     "the stem in small: C = 3, 4-byte copies, K = 147, the last slice 19 (< one 32 tile)"},
    {{2, 6, 5, 13, 9, 3, 2, 1}, 2, 2, 64, ConvForwardKernel::pipelined_64x64,
     "odd C (4-byte copies), odd O (no paired stores), K = 117: 64 + 53"},
    {{1, 3, 3, 16, 10, 3, 1, 2}, 2, 2, 128, ConvForwardKernel::pipelined_128x128,
     "padding 2 on a 3x3 image: patches mostly padding, 128x128 tiles"},
};

std::string describe(const Precision& pr, const SplitCase& sc) {
  const ConvCase& c = sc.c;
  std::ostringstream os;
  os << pr.name << " x [" << c.n << "," << c.h << "," << c.w << "," << c.c << "] o " << c.o << " k " << c.k
     << " stride " << c.stride << " pad " << c.pad << " split " << sc.forced << ": " << sc.why;
  return os.str();
}

int64_t pipelined_total(const cuda::ConvForwardLaunches& l) { return l.pipelined_64x64 + l.pipelined_128x128; }

// conv2d_forward with kernel k and split setting `split` forced; checks that exactly one pipelined
// launch ran, split or not as `expect_split` says.
Tensor forward_with(ConvForwardKernel k, int64_t split, bool expect_split, const ops::Conv2dParams& p,
                    const Tensor& x, const Tensor& w) {
  const cuda::ScopedConvForwardKernel force(k);
  const cuda::ScopedConvForwardSplitK slices(split);
  const cuda::ConvForwardLaunches before = cuda::conv_forward_launches();
  Tensor y = ops::conv2d_forward(p, x, w);
  const cuda::ConvForwardLaunches after = cuda::conv_forward_launches();
  CHECK(pipelined_total(after) - pipelined_total(before) == 1);
  CHECK(after.tc_tiled == before.tc_tiled);
  if (k == ConvForwardKernel::pipelined_64x64) CHECK(after.pipelined_64x64 - before.pipelined_64x64 == 1);
  if (k == ConvForwardKernel::pipelined_128x128) CHECK(after.pipelined_128x128 - before.pipelined_128x128 == 1);
  CHECK(after.pipelined_split_k - before.pipelined_split_k == (expect_split ? 1 : 0));
  return y;
}

// The CPU reference in double, and S = sum_k |a_k b_k| per output (the error scale).
void reference(const ConvCase& c, const Tensor& x, const Tensor& w, std::vector<double>& ref,
               std::vector<double>& scale) {
  const ops::Conv2dParams p = params_of(c);
  const int64_t oh_n = p.out_h(c.h), ow_n = p.out_w(c.w);
  const float* xs = x.f32();
  const float* ws = w.f32();
  ref.assign(static_cast<size_t>(c.n * oh_n * ow_n * c.o), 0.0);
  scale.assign(ref.size(), 0.0);
  for (int64_t n = 0; n < c.n; ++n)
    for (int64_t oh = 0; oh < oh_n; ++oh)
      for (int64_t ow = 0; ow < ow_n; ++ow)
        for (int64_t o = 0; o < c.o; ++o) {
          double sum = 0.0, mag = 0.0;
          for (int64_t kh = 0; kh < c.k; ++kh)
            for (int64_t kw = 0; kw < c.k; ++kw) {
              const int64_t ih = oh * c.stride - c.pad + kh, iw = ow * c.stride - c.pad + kw;
              if (ih < 0 || ih >= c.h || iw < 0 || iw >= c.w) continue;
              for (int64_t ch = 0; ch < c.c; ++ch) {
                const double v = static_cast<double>(xs[((n * c.h + ih) * c.w + iw) * c.c + ch]) *
                                 ws[((o * c.k + kh) * c.k + kw) * c.c + ch];
                sum += v;
                mag += std::fabs(v);
              }
            }
          const size_t at = static_cast<size_t>(((n * oh_n + oh) * ow_n + ow) * c.o + o);
          ref[at] = sum;
          scale[at] = mag;
        }
}

void check_against_reference(const Tensor& got_d, const std::vector<double>& ref, const std::vector<double>& scale,
                             double u, int64_t k, const std::string& what) {
  INFO(what);
  const Tensor got = got_d.to(Device::cpu());
  REQUIRE(static_cast<size_t>(got.numel()) == ref.size());
  const double per = (2 * u + u * u) + 3.0 * static_cast<double>(k) * std::ldexp(1.0, -23);
  double err2 = 0.0, ref2 = 0.0;
  int64_t bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = static_cast<double>(got.f32()[i]) - ref[i];
    if (!(std::fabs(e) <= per * scale[i])) ++bad;
    err2 += e * e;
    ref2 += ref[i] * ref[i];
  }
  CHECK(bad == 0);
  if (ref.size() >= 64) CHECK(err2 <= 4 * u * u * ref2);
}

}  // namespace

TEST_CASE("split-K conv forward: each slice is the unsplit kernel over its k range, summed in slice order") {
  AE_GPU_TEST_PRELUDE();
  uint64_t seed = 9100;
  for (const SplitCase& sc : kCases) {
    const ConvCase& c = sc.c;
    const ops::Conv2dParams p = params_of(c);
    const Tensor x = test::random_tensor({c.n, c.h, c.w, c.c}, seed++);
    const Tensor w = test::random_tensor({c.o, c.k, c.k, c.c}, seed++);
    const Tensor xd = to_device(x), wd = to_device(w);
    const ConvGeometry g(p, xd.shape(), c.o);
    const int64_t k = g.k();
    std::vector<double> ref, scale;
    reference(c, x, w, ref, scale);

    cuda::ConvForwardSplit plan;
    {
      const cuda::ScopedConvForwardKernel force(sc.kernel);
      const cuda::ScopedConvForwardSplitK slices(sc.forced);
      plan = cuda::conv_forward_split_plan(g);
    }
    INFO("K = " << k << ", plan " << plan.slices << " x " << plan.k_per_split);
    REQUIRE(plan.slices == sc.slices);
    REQUIRE(plan.k_per_split == sc.k_per_split);
    REQUIRE(plan.k_per_split % 64 == 0);
    REQUIRE((plan.slices - 1) * plan.k_per_split < k);
    REQUIRE(plan.slices * plan.k_per_split >= k);

    // w with the weights outside [k_begin, k_end) zeroed, per slice (host, then device).
    std::vector<Tensor> masked;
    for (int64_t s = 0; s < plan.slices; ++s) {
      Tensor ws = w.clone();
      const int64_t lo = s * plan.k_per_split, hi = std::min(k, lo + plan.k_per_split);
      for (int64_t o = 0; o < c.o; ++o)
        for (int64_t kk = 0; kk < k; ++kk)
          if (kk < lo || kk >= hi) ws.f32()[o * k + kk] = 0.0f;
      masked.push_back(to_device(ws));
    }

    for (const Precision& pr : kPrecisions) {
      const cuda::ScopedConvMath mode(pr.math);
      const std::string what = describe(pr, sc);
      INFO(what);
      const Tensor split = forward_with(sc.kernel, sc.forced, true, p, xd, wd);
      // The slices through the unsplit kernel, summed on the host as sum_conv_slices does.
      std::vector<double> total(static_cast<size_t>(g.m() * g.o), 0.0);
      for (const Tensor& ws : masked) {
        const Tensor part = forward_with(sc.kernel, 1, false, p, xd, ws).to(Device::cpu());
        for (size_t i = 0; i < total.size(); ++i) total[i] += static_cast<double>(part.f32()[i]);
      }
      Tensor expected = Tensor::empty(split.shape());
      for (size_t i = 0; i < total.size(); ++i) expected.f32()[i] = static_cast<float>(total[i]);
      CHECK(test::bitwise_equal(split, expected));
      check_against_reference(split, ref, scale, pr.u, k, what);

      // Repeatable: a second run gives the same bits.
      CHECK(test::bitwise_equal(forward_with(sc.kernel, sc.forced, true, p, xd, wd), split));
      // Slices forced to 1: the unsplit kernel, bitwise the tiled kernel.
      const Tensor unsplit = forward_with(sc.kernel, 1, false, p, xd, wd);
      {
        const cuda::ScopedConvForwardKernel tiled(ConvForwardKernel::tiled);
        const cuda::ScopedConvForwardSplitK forced(sc.forced);  // no effect on the tiled kernel
        const cuda::ConvForwardLaunches before = cuda::conv_forward_launches();
        const Tensor t = ops::conv2d_forward(p, xd, wd);
        const cuda::ConvForwardLaunches after = cuda::conv_forward_launches();
        CHECK(after.tc_tiled - before.tc_tiled == 1);
        CHECK(after.pipelined_split_k == before.pipelined_split_k);
        CHECK(test::bitwise_equal(unsplit, t));
      }
      check_against_reference(unsplit, ref, scale, pr.u, k, what + " (unsplit)");
      require_guards_intact();
    }
  }
#if defined(AE_EMULATED_DEVICE)
  CHECK(emu::async_copy_take_leaks().empty());
#endif
}

TEST_CASE("split-K conv forward: the automatic slice rule and when it applies") {
  AE_GPU_TEST_PRELUDE();
  // The rule: ~264 64x64 blocks (two waves on 132 SMs), >= 256 k per slice, <= 64 slices.
  CHECK(cuda::conv_forward_split_count(4608, 25 * 8) == 2);   // layer4, batch 32: 200 tiles
  CHECK(cuda::conv_forward_split_count(4608, 1 * 8) == 18);   // layer4, batch 1: 8 tiles
  CHECK(cuda::conv_forward_split_count(2304, 98 * 4) == 1);   // layer3, batch 32: 392 tiles, enough
  CHECK(cuda::conv_forward_split_count(2304, 25 * 4) == 3);   // layer3, batch 8
  CHECK(cuda::conv_forward_split_count(147, 1) == 1);         // the stem's K is too short
  CHECK(cuda::conv_forward_split_count(1 << 20, 1) == 64);    // capped
  {
    // The plan of layer4 at batch 32 and 1 (plans only: nothing runs at this size here).
    const cuda::ScopedConvForwardKernel automatic(ConvForwardKernel::automatic);
    const cuda::ScopedConvForwardSplitK split(0);
    ops::Conv2dParams p;
    p.kernel_h = p.kernel_w = 3, p.pad_h = p.pad_w = 1;
    const cuda::ConvForwardSplit b32 = cuda::conv_forward_split_plan(ConvGeometry(p, {32, 7, 7, 512}, 512));
    CHECK(b32.slices == 2);
    CHECK(b32.k_per_split == 2304);
    const cuda::ConvForwardSplit b1 = cuda::conv_forward_split_plan(ConvGeometry(p, {1, 7, 7, 512}, 512));
    CHECK(b1.slices == 18);
    CHECK(b1.k_per_split == 256);
    // A forced tiling without a forced split: unsplit.
    const cuda::ScopedConvForwardKernel forced(ConvForwardKernel::pipelined_64x64);
    CHECK(cuda::conv_forward_split_plan(ConvGeometry(p, {1, 7, 7, 512}, 512)).slices == 1);
  }

  // Automatic on a layer4-like shape in small: 1x7x7x64 -> 64, K = 576, one 64x64 tile: 2 slices
  // (320 + 256), 64x64 tiles; the same bits as the forced split of 2; and not the unsplit bits.
  const ConvCase c{1, 7, 7, 64, 64, 3, 1, 1};
  const ops::Conv2dParams p = params_of(c);
  const Tensor x = test::random_tensor({c.n, c.h, c.w, c.c}, 9201);
  const Tensor w = test::random_tensor({c.o, c.k, c.k, c.c}, 9202);
  const Tensor xd = to_device(x), wd = to_device(w);
  const cuda::ScopedConvMath mode(ConvMath::tf32);
  const cuda::ScopedConvForwardKernel automatic(ConvForwardKernel::automatic);
  const cuda::ScopedConvForwardSplitK split(0);
  const cuda::ConvForwardSplit plan = cuda::conv_forward_split_plan(ConvGeometry(p, xd.shape(), c.o));
  CHECK(plan.slices == 2);
  CHECK(plan.k_per_split == 320);
  cuda::ConvForwardLaunches before = cuda::conv_forward_launches();
  const Tensor y_auto = ops::conv2d_forward(p, xd, wd);
  cuda::ConvForwardLaunches after = cuda::conv_forward_launches();
  CHECK(after.pipelined_64x64 - before.pipelined_64x64 == 1);
  CHECK(after.pipelined_split_k - before.pipelined_split_k == 1);
  CHECK(after.tc_tiled == before.tc_tiled);
  CHECK(test::bitwise_equal(y_auto, forward_with(ConvForwardKernel::automatic, 2, true, p, xd, wd)));
  // The same shape again, with other tensors allocated in between: the same slices, the same bits.
  const Tensor spacer = to_device(test::random_tensor({1001}, 9203));
  CHECK(test::bitwise_equal(ops::conv2d_forward(p, xd, wd), y_auto));
  const Tensor y_unsplit = forward_with(ConvForwardKernel::automatic, 1, false, p, xd, wd);
  CHECK_FALSE(test::bitwise_equal(y_auto, y_unsplit));  // another summation order (not a requirement
                                                        // in general; true for this data)
  std::vector<double> ref, scale;
  reference(c, x, w, ref, scale);
  check_against_reference(y_auto, ref, scale, std::ldexp(1.0, -11), c.k * c.k * c.c, "automatic split");

  // A forced tiling without a forced split does not split (its bits stay the tiled kernel's).
  CHECK(test::bitwise_equal(forward_with(ConvForwardKernel::pipelined_64x64, 0, false, p, xd, wd), y_unsplit));
  // f32 math never reaches the pipelined kernel, split or not.
  {
    const cuda::ScopedConvMath f32(ConvMath::f32);
    const cuda::ScopedConvForwardSplitK forced(4);
    before = cuda::conv_forward_launches();
    (void)ops::conv2d_forward(p, xd, wd);
    after = cuda::conv_forward_launches();
    CHECK(after.f32_tiled - before.f32_tiled == 1);
    CHECK(after.pipelined_split_k == before.pipelined_split_k);
    CHECK(pipelined_total(after) == pipelined_total(before));
  }
  // A K of at most one 64-wide step never splits, whatever is asked.
  {
    const ConvCase s{1, 4, 4, 8, 8, 3, 1, 1};  // K = 72: two steps, split into 2 of 64 + 8
    const ConvCase t{1, 4, 4, 4, 8, 3, 1, 1};  // K = 36: one step
    const cuda::ScopedConvForwardSplitK forced(8);
    CHECK(cuda::conv_forward_split_plan(ConvGeometry(params_of(s), {1, 4, 4, 8}, 8)).slices == 2);
    CHECK(cuda::conv_forward_split_plan(ConvGeometry(params_of(t), {1, 4, 4, 4}, 8)).slices == 1);
  }
  require_guards_intact();
}

#if defined(AE_EMULATED_DEVICE)
#include <cstdio>

#include "kernels/emu/profile.h"

// Not run by ctest (doctest skip): the emulated-device profile (docs/emulated_profile.md) of the
// pipelined forward on ResNet-18's layer4 conv (3x3 512->512 at 7x7), tf32, batch 1 then 32, with
// the automatic split-K and with split-K off. The counts are exact for what the emulated threads
// did; the times are roofline ESTIMATES, not measurements. Needs a -DAE_EMU_PROFILE=ON build (slow:
// batch 32 is 3.7 GFLOP through the emulated tensor cores):
//   tests/gpu_test_cuda_conv_splitk --no-skip -tc='*profile*'
TEST_CASE("profile of the split-K conv forward on ResNet-18 layer4 (manual: --no-skip)" * doctest::skip()) {
  AE_GPU_TEST_PRELUDE();
  const cuda::ScopedConvMath mode(ConvMath::tf32);
  const cuda::ScopedConvForwardKernel automatic(ConvForwardKernel::automatic);
  for (const int64_t batch : {int64_t{1}, int64_t{32}}) {
    const ConvCase c{batch, 7, 7, 512, 512, 3, 1, 1};
    const Tensor x = to_device(test::random_tensor({c.n, c.h, c.w, c.c}, 1));
    const Tensor w = to_device(test::random_tensor({c.o, c.k, c.k, c.c}, 2));
    for (const int64_t split : {int64_t{0}, int64_t{1}}) {
      const cuda::ScopedConvForwardSplitK s(split);
      const cuda::ConvForwardSplit plan = cuda::conv_forward_split_plan(ConvGeometry(params_of(c), x.shape(), c.o));
      emu::profile_reset();
      emu::set_profiling(true);
      (void)ops::conv2d_forward(params_of(c), x, w);
      emu::set_profiling(false);
      std::printf("\n### forward 3x3 512->512 @7x7, batch %lld, tf32, split-K %s (%lld slices of %lld k)\n\n%s",
                  static_cast<long long>(batch), split == 0 ? "automatic" : "off", static_cast<long long>(plan.slices),
                  static_cast<long long>(plan.k_per_split), emu::profile_table().c_str());
      std::fflush(stdout);
      emu::profile_reset();
    }
  }
  require_guards_intact();
}
#endif
