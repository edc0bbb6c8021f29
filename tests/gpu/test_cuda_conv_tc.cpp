// Tensor-core convolution (conv_math tf32 and bf16: mma.sync with float32 accumulation) against the
// CPU backend's float32 convolution, forward, backward-data and backward-weight, over the awkward
// sweep of the f32 tests: 1x1 and odd spatial sizes, kernels 1/3/7, strides 1/2, padding 0..3,
// channel counts 1/3/5/17/64, batch 1 and 2. Outputs start poisoned (NaN) and every buffer has
// red zones (gpu_harness.h), so an unwritten element or a stray write fails.
//
// Tolerances follow from the rounding. With unit roundoff u (tf32: 2^-11, cvt.rna; bf16: 2^-8,
// round to nearest even) each rounded operand is within u of its value, so each product is within
// (2u + u^2)|a b|; float32 accumulation of K products (ours and the reference's) adds at most about
// K * 2^-23 of sum |a b| in the worst case. Per element, then:
//   |got - ref| <= ((2u + u^2) + 3 K 2^-23) * S,   S = sum_k |a_k b_k| (the same op on |x|, |w|)
// In aggregate, independent rounding errors give NMSE = sum err^2 / sum ref^2 of about 2u^2/3;
// we require it below 4u^2 per case (with at least 64 outputs) and over the whole sweep, and above
// u^2/10 over the sweep, which shows the operands really were rounded (a float32 result would be
// ~1e-14). A deliberately wrong operand layout (k-adjacent elements swapped pairwise: the classic
// bf16 half-word mix-up) must give a sweep NMSE at least 100x larger than ours.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <sstream>

#include "kernels/cuda/conv_backward.h"
#include "kernels/cuda/conv_math.h"
#include "kernels/ops.h"
#include "tests/gpu/conv_cases.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

using namespace ae;
using namespace ae::gputest;
using cuda::ConvMath;

namespace {

using Case = ConvCase;
constexpr const auto& kCases = kConvSweep;

enum class Op { forward, backward_data, backward_weight };
const char* op_name(Op op) {
  switch (op) {
    case Op::forward: return "forward";
    case Op::backward_data: return "backward-data";
    case Op::backward_weight: return "backward-weight";
  }
  return "?";
}


std::string describe(Op op, const Precision& pr, const Case& c) {
  std::ostringstream os;
  os << op_name(op) << " " << pr.name << " x [" << c.n << "," << c.h << "," << c.w << "," << c.c << "] o " << c.o
     << " k " << c.k << " stride " << c.stride << " pad " << c.pad;
  return os.str();
}

Tensor abs_of(const Tensor& t) {
  Tensor r = t.clone();
  for (int64_t i = 0; i < r.numel(); ++i) r.f32()[i] = std::fabs(r.f32()[i]);
  return r;
}

// Swaps elements 2i and 2i+1 along `axis` (an odd last element stays): what a kernel that mixed up
// the two halves of a packed k-pair would multiply.
Tensor swap_pairs(const Tensor& t, int axis) {
  Tensor r = t.clone();
  int64_t inner = 1;
  for (int d = axis + 1; d < static_cast<int>(t.shape().size()); ++d) inner *= t.dim(d);
  const int64_t len = t.dim(axis), outer = t.numel() / (inner * len);
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i + 1 < len; i += 2) {
      for (int64_t j = 0; j < inner; ++j) {
        std::swap(r.f32()[(o * len + i) * inner + j], r.f32()[(o * len + i + 1) * inner + j]);
      }
    }
  }
  return r;
}

// The three inputs of one case, and the op applied to any pair of them on any backend.
struct Problem {
  Op op;
  ops::Conv2dParams p;
  Shape x_shape, w_shape;
  Tensor x, w, dy;
  int64_t k;  // GEMM reduction length (an upper bound for backward-data's stride phases)

  Problem(Op o, const Case& c, uint64_t seed) : op(o), p(params_of(c)) {
    x_shape = {c.n, c.h, c.w, c.c};
    w_shape = {c.o, c.k, c.k, c.c};
    x = test::random_tensor(x_shape, seed);
    w = test::random_tensor(w_shape, seed + 1);
    dy = test::random_tensor({c.n, p.out_h(c.h), p.out_w(c.w), c.o}, seed + 2);
    k = op == Op::forward ? c.k * c.k * c.c : op == Op::backward_data ? c.k * c.k * c.o : dy.numel() / c.o;
  }
  // The op's two operands (forward: x, w; backward-data: dy, w; backward-weight: x, dy).
  Tensor run(const Tensor& x_or_dy, const Tensor& w_or_dy) const {
    switch (op) {
      case Op::forward: return ops::conv2d_forward(p, x_or_dy, w_or_dy);
      case Op::backward_data: return ops::conv2d_backward_data(p, x_or_dy, w_or_dy, x_shape);
      case Op::backward_weight: return ops::conv2d_backward_weight(p, x_or_dy, w_or_dy, w_shape);
    }
    return {};
  }
  Tensor first() const { return op == Op::backward_data ? dy : x; }
  Tensor second() const { return op == Op::backward_weight ? dy : w; }
  // The first operand with k-adjacent elements swapped: channels for forward (x's c) and
  // backward-data (dy's o), output columns for backward-weight (k = (n, oh, ow)).
  Tensor first_with_pairs_swapped() const { return swap_pairs(first(), op == Op::backward_weight ? 2 : 3); }
};

struct Errors {
  double worst_ratio = 0;  // max |got - ref| / bound
  int64_t worst_index = -1, violations = 0;
  double err2 = 0, ref2 = 0;
  std::string report;
  double nmse() const { return ref2 > 0 ? err2 / ref2 : 0; }
};

Errors measure(const Tensor& got_device, const Tensor& ref, const Tensor& abs_sum, double rel_bound,
               const std::string& what) {
  const Tensor got = got_device.to(Device::cpu());
  Errors e;
  std::ostringstream os;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    const double g = got.f32()[i], r = ref.f32()[i];
    const double err = std::isfinite(g) ? std::fabs(g - r) : INFINITY;
    const double bound = rel_bound * abs_sum.f32()[i] + 1e-30;
    const double ratio = err / bound;
    if (ratio > e.worst_ratio || e.worst_index < 0) e.worst_ratio = ratio, e.worst_index = i;
    if (ratio > 1.0 && ++e.violations <= 10) os << "  [" << i << "] got " << g << " ref " << r << " bound " << bound << "\n";
    e.err2 += std::isfinite(err) ? err * err : INFINITY;
    e.ref2 += r * r;
  }
  std::ostringstream head;
  head << what << ": worst error " << 100.0 * e.worst_ratio << "% of bound at " << e.worst_index << ", NMSE "
       << e.nmse() << ", " << e.violations << " elements over the bound\n";
  e.report = head.str() + os.str();
  return e;
}

double nmse_between(const Tensor& a, const Tensor& ref) {
  double err2 = 0, ref2 = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    const double d = static_cast<double>(a.f32()[i]) - ref.f32()[i];
    err2 += d * d;
    ref2 += static_cast<double>(ref.f32()[i]) * ref.f32()[i];
  }
  return ref2 > 0 ? err2 / ref2 : 0;
}

// One op in one precision over the sweep.
void check_sweep(Op op, const Precision& pr) {
  const cuda::ScopedConvMath mode(pr.math);
  double sweep_err2 = 0, sweep_ref2 = 0, sweep_wrong_err2 = 0;
  uint64_t seed = 1000 * (static_cast<uint64_t>(op) + 1);
  for (const Case& c : kCases) {
    const Problem prob(op, c, seed);
    seed += 3;
    const std::string what = describe(op, pr, c);
    const Tensor ref = prob.run(prob.first(), prob.second());  // CPU backend, float32
    const Tensor abs_sum = prob.run(abs_of(prob.first()), abs_of(prob.second()));
    const Tensor got = prob.run(to_device(prob.first()), to_device(prob.second()));
    REQUIRE(got.device().is_cuda());
    REQUIRE(got.shape() == ref.shape());
    const double rel_bound = 2 * pr.u + pr.u * pr.u + 3.0 * static_cast<double>(prob.k) * std::ldexp(1.0, -23);
    const Errors e = measure(got, ref, abs_sum, rel_bound, what);
    INFO(e.report);
    REQUIRE(e.violations == 0);
    // A handful of outputs is too few for a statistical bound (one cancelling sum dominates).
    if (ref.numel() >= 64) CHECK(e.nmse() <= 4 * pr.u * pr.u);
    sweep_err2 += e.err2;
    sweep_ref2 += e.ref2;
    sweep_wrong_err2 += nmse_between(prob.run(prob.first_with_pairs_swapped(), prob.second()), ref) * e.ref2;
    require_guards_intact();
  }
  const double sweep_nmse = sweep_err2 / sweep_ref2, wrong_nmse = sweep_wrong_err2 / sweep_ref2;
  MESSAGE(std::string(op_name(op)) << " " << std::string(pr.name) << ": sweep NMSE " << sweep_nmse << " (2u^2/3 = "
                                   << 2 * pr.u * pr.u / 3 << "), pair-swapped layout " << wrong_nmse);
  CHECK(sweep_nmse >= pr.u * pr.u / 10);  // the operands were rounded: this is not the f32 path
  CHECK(sweep_nmse <= 4 * pr.u * pr.u);
  CHECK(sweep_nmse * 100 < wrong_nmse);
}

}  // namespace

TEST_CASE("conv math mode: parsing, environment, setter") {
  CHECK(cuda::parse_conv_math("f32", "test") == ConvMath::f32);
  CHECK(cuda::parse_conv_math("tf32", "test") == ConvMath::tf32);
  CHECK(cuda::parse_conv_math("bf16", "test") == ConvMath::bf16);
  CHECK_THROWS_WITH_AS(cuda::parse_conv_math("fp16", "--conv-math"),
                       doctest::Contains("--conv-math: unknown convolution math 'fp16' (expected f32, tf32 or bf16)"),
                       Error);
  CHECK(std::string(cuda::conv_math_name(ConvMath::bf16)) == "bf16");
  const char* saved = std::getenv("AE_CONV_MATH");
  const std::string saved_value = saved != nullptr ? saved : "";
  ::unsetenv("AE_CONV_MATH");
  CHECK(cuda::conv_math_from_environment() == ConvMath::f32);
  ::setenv("AE_CONV_MATH", "", 1);
  CHECK(cuda::conv_math_from_environment() == ConvMath::f32);
  ::setenv("AE_CONV_MATH", "tf32", 1);
  CHECK(cuda::conv_math_from_environment() == ConvMath::tf32);
  ::setenv("AE_CONV_MATH", "TF32", 1);
  CHECK_THROWS_WITH_AS(cuda::conv_math_from_environment(), doctest::Contains("AE_CONV_MATH: unknown"), Error);
  if (saved != nullptr) {
    ::setenv("AE_CONV_MATH", saved_value.c_str(), 1);
  } else {
    ::unsetenv("AE_CONV_MATH");
  }
  const ConvMath before = cuda::conv_math();
  {
    const cuda::ScopedConvMath scoped(ConvMath::bf16);
    CHECK(cuda::conv_math() == ConvMath::bf16);
    cuda::set_conv_math(ConvMath::tf32);
    CHECK(cuda::conv_math() == ConvMath::tf32);
  }
  CHECK(cuda::conv_math() == before);
}

TEST_CASE("tensor-core conv2d forward matches the CPU float32 conv within the tf32 / bf16 bounds") {
  AE_GPU_TEST_PRELUDE();
  for (const Precision& pr : kPrecisions) check_sweep(Op::forward, pr);
}

TEST_CASE("tensor-core conv2d backward-data matches the CPU float32 conv within the tf32 / bf16 bounds") {
  AE_GPU_TEST_PRELUDE();
  for (const Precision& pr : kPrecisions) check_sweep(Op::backward_data, pr);
}

TEST_CASE("tensor-core conv2d backward-weight matches the CPU float32 conv within the tf32 / bf16 bounds") {
  AE_GPU_TEST_PRELUDE();
  bool split_seen = false;
  for (const Case& c : kCases) {
    const int64_t rows = c.n * params_of(c).out_h(c.h) * params_of(c).out_w(c.w);
    const int64_t tiles = (c.o + 63) / 64 * ((c.k * c.k * c.c + 63) / 64);
    split_seen = split_seen || cuda::conv_wgrad_split_count(rows, tiles) > 1;
  }
  CHECK_MESSAGE(split_seen, "no case exercised backward-weight's split-K path");
  for (const Precision& pr : kPrecisions) check_sweep(Op::backward_weight, pr);
}

TEST_CASE("tensor-core conv2d is bitwise repeatable, differs from f32, and f32 stays the CUDA-core result") {
  AE_GPU_TEST_PRELUDE();
  const Case c{2, 17, 17, 5, 3, 3, 1, 1};  // backward-weight splits this one into K slices
  for (Op op : {Op::forward, Op::backward_data, Op::backward_weight}) {
    const Problem prob(op, c, 77);
    const Tensor a = to_device(prob.first()), b = to_device(prob.second());
    Tensor f32_result;
    {
      const cuda::ScopedConvMath mode(ConvMath::f32);
      f32_result = prob.run(a, b);
      // The default path is unchanged: the f32 tests' tolerance against the CPU.
      test::require_cuda_close(f32_result, prob.run(prob.first(), prob.second()), {1e-4, 1e-4, 1e-10},
                               std::string(op_name(op)) + " f32");
    }
    for (const Precision& pr : kPrecisions) {
      const cuda::ScopedConvMath mode(pr.math);
      const Tensor first = prob.run(a, b), second = prob.run(a, b);
      INFO(describe(op, pr, c));
      CHECK(test::bitwise_equal(first, second));
      // Same shape and dtype, so that "not bitwise equal" can only mean other values.
      REQUIRE(first.shape() == f32_result.shape());
      REQUIRE(first.dtype() == f32_result.dtype());
      CHECK_FALSE(test::bitwise_equal(first, f32_result));
    }
  }
  require_guards_intact();
}
