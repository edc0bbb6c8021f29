// Convolution on the CPU: forward, backward-data and backward-weight against naive double-precision
// loops over an awkward sweep of shapes, with the column buffer forced into many small chunks,
// backward against central finite differences, and the argument checks of kernels/conv.cpp; the
// direct forward (kernels/cpu/conv_direct.h) over the same sweep (batch 1 and 3) for each vector ISA,
// also called on its own with x and w in exact-size buffers (AddressSanitizer's red zone right after
// the last element: scripts/sanitize.sh runs this file) and y between red zones; its thread-count
// invariance and dispatch; bf16 operands (computed on their widened values).
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu/conv_direct.h"
#include "kernels/cpu/im2col.h"
#include "kernels/cpu/parallel_rows.h"
#include "kernels/cpu/winograd.h"
#include "runtime/thread_pool.h"
#include "kernels/ops.h"
#include "tests/support/check.h"
#include "tests/support/conv_scope.h"
#include "tests/support/expect.h"

namespace {

using ae::Shape;
using ae::Tensor;
using ae::ops::Conv2dParams;
namespace test = ae::test;
using ae::test::require_error;

struct ConvCase {
  int64_t n, h, w, c, o;
  Conv2dParams p;

  int64_t oh() const { return p.out_h(h); }
  int64_t ow() const { return p.out_w(w); }
  Shape x_shape() const { return {n, h, w, c}; }
  Shape w_shape() const { return {o, p.kernel_h, p.kernel_w, c}; }
  Shape y_shape() const { return {n, oh(), ow(), o}; }
  bool valid() const { return h + 2 * p.pad_h >= p.kernel_h && w + 2 * p.pad_w >= p.kernel_w; }
  std::string str() const {
    std::ostringstream os;
    os << "x [" << n << "," << h << "," << w << "," << c << "] O " << o << " kernel " << p.kernel_h << "x" << p.kernel_w
       << " stride " << p.stride_h << "x" << p.stride_w << " pad " << p.pad_h << "x" << p.pad_w;
    return os.str();
  }
};

// Calls tap(n, oh, ow, h, w, kh, kw) for every kernel tap that lands inside the input: the
// definition of convolution, written once and shared by the three reference loops.
void for_each_tap(const ConvCase& k,
                  const std::function<void(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t)>& tap) {
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t oh = 0; oh < k.oh(); ++oh)
      for (int64_t ow = 0; ow < k.ow(); ++ow)
        for (int64_t kh = 0; kh < k.p.kernel_h; ++kh) {
          const int64_t h = oh * k.p.stride_h - k.p.pad_h + kh;
          if (h < 0 || h >= k.h) continue;
          for (int64_t kw = 0; kw < k.p.kernel_w; ++kw) {
            const int64_t w = ow * k.p.stride_w - k.p.pad_w + kw;
            if (w < 0 || w >= k.w) continue;
            tap(n, oh, ow, h, w, kh, kw);
          }
        }
}

// Flat offsets of NHWC / OHWI elements (channel 0); channels follow contiguously.
int64_t x_at(const ConvCase& k, int64_t n, int64_t h, int64_t w) { return ((n * k.h + h) * k.w + w) * k.c; }
int64_t y_at(const ConvCase& k, int64_t n, int64_t oh, int64_t ow) { return ((n * k.oh() + oh) * k.ow() + ow) * k.o; }
int64_t w_at(const ConvCase& k, int64_t o, int64_t kh, int64_t kw) {
  return ((o * k.p.kernel_h + kh) * k.p.kernel_w + kw) * k.c;
}

std::vector<double> ref_forward(const ConvCase& k, const std::vector<double>& x, const std::vector<double>& wt) {
  std::vector<double> y(static_cast<std::size_t>(ae::shape_numel(k.y_shape())), 0.0);
  for_each_tap(k, [&](int64_t n, int64_t oh, int64_t ow, int64_t h, int64_t w, int64_t kh, int64_t kw) {
    const double* xs = &x[x_at(k, n, h, w)];
    double* ys = &y[y_at(k, n, oh, ow)];
    for (int64_t o = 0; o < k.o; ++o) {
      const double* ws = &wt[w_at(k, o, kh, kw)];
      double s = 0;
      for (int64_t c = 0; c < k.c; ++c) s += xs[c] * ws[c];
      ys[o] += s;
    }
  });
  return y;
}

std::vector<double> ref_backward_data(const ConvCase& k, const std::vector<double>& dy, const std::vector<double>& wt) {
  std::vector<double> dx(static_cast<std::size_t>(ae::shape_numel(k.x_shape())), 0.0);
  for_each_tap(k, [&](int64_t n, int64_t oh, int64_t ow, int64_t h, int64_t w, int64_t kh, int64_t kw) {
    double* dxs = &dx[x_at(k, n, h, w)];
    const double* dys = &dy[y_at(k, n, oh, ow)];
    for (int64_t o = 0; o < k.o; ++o) {
      const double* ws = &wt[w_at(k, o, kh, kw)];
      for (int64_t c = 0; c < k.c; ++c) dxs[c] += dys[o] * ws[c];
    }
  });
  return dx;
}

std::vector<double> ref_backward_weight(const ConvCase& k, const std::vector<double>& x,
                                        const std::vector<double>& dy) {
  std::vector<double> dw(static_cast<std::size_t>(ae::shape_numel(k.w_shape())), 0.0);
  for_each_tap(k, [&](int64_t n, int64_t oh, int64_t ow, int64_t h, int64_t w, int64_t kh, int64_t kw) {
    const double* xs = &x[x_at(k, n, h, w)];
    const double* dys = &dy[y_at(k, n, oh, ow)];
    for (int64_t o = 0; o < k.o; ++o) {
      double* dws = &dw[w_at(k, o, kh, kw)];
      for (int64_t c = 0; c < k.c; ++c) dws[c] += dys[o] * xs[c];
    }
  });
  return dw;
}

// The awkward sweep: every spatial size x kernel x stride x padding that has an output, with
// channel counts, batch size and an uneven second padding cycled through so that every value
// of each appears many times without the full cross product.
std::vector<ConvCase> sweep() {
  const int64_t spatial[][2] = {{1, 1}, {7, 5}, {13, 17}};
  const int kernels[][2] = {{1, 1}, {3, 3}, {7, 7}, {3, 1}};
  const int64_t channels[] = {1, 3, 5, 64};
  std::vector<ConvCase> cases;
  int64_t i = 0;
  for (const auto& hw : spatial)
    for (const auto& kernel : kernels)
      for (int stride = 1; stride <= 2; ++stride)
        for (int pad = 0; pad <= 3; ++pad) {
          ConvCase k{};
          k.h = hw[0];
          k.w = hw[1];
          k.p.kernel_h = kernel[0];
          k.p.kernel_w = kernel[1];
          k.p.stride_h = stride;
          k.p.stride_w = (i % 5 == 4) ? 3 - stride : stride;  // sometimes unequal strides
          k.p.pad_h = pad;
          k.p.pad_w = (i % 3 == 2) ? (pad + 1) % 4 : pad;  // sometimes unequal padding
          k.n = 1 + i % 2;
          k.c = channels[i % 4];
          k.o = channels[(i / 4 + 2 * i + 1) % 4];
          ++i;
          if (k.valid()) cases.push_back(k);
        }
  return cases;
}

// Float GEMMs over up to 7*7*64 = 3136 terms of size ~1 against exact double sums.
const test::Tolerance kConvTol{/*atol=*/5e-4, /*rtol=*/1e-4, /*max_nmse=*/1e-10};

void check_case_against_reference(const ConvCase& k, uint64_t seed) {
  const Tensor x = test::random_tensor(k.x_shape(), seed);
  const Tensor w = test::random_tensor(k.w_shape(), seed + 1);
  const Tensor dy = test::random_tensor(k.y_shape(), seed + 2);
  const auto xd = test::to_double(x), wd = test::to_double(w), dyd = test::to_double(dy);

  const Tensor y = ae::ops::conv2d_forward(k.p, x, w);
  REQUIRE(y.shape() == k.y_shape());
  AE_REQUIRE_OK(test::compare(y, ref_forward(k, xd, wd), kConvTol, "forward " + k.str()));

  const Tensor dx = ae::ops::conv2d_backward_data(k.p, dy, w, k.x_shape());
  REQUIRE(dx.shape() == k.x_shape());
  AE_REQUIRE_OK(test::compare(dx, ref_backward_data(k, dyd, wd), kConvTol, "backward_data " + k.str()));

  const Tensor dw = ae::ops::conv2d_backward_weight(k.p, x, dy, k.w_shape());
  REQUIRE(dw.shape() == k.w_shape());
  AE_REQUIRE_OK(test::compare(dw, ref_backward_weight(k, xd, dyd), kConvTol, "backward_weight " + k.str()));
}

// Chunks of exactly `bytes` of column matrix for one scope (the policy is restored even when
// a check throws).
class ChunkBytes {
 public:
  explicit ChunkBytes(std::size_t bytes) : saved_(ae::cpu::conv_chunking()) {
    ae::cpu::set_conv_chunking({/*target_bytes=*/bytes, /*min_rows=*/0, /*max_bytes=*/bytes});
  }
  ~ChunkBytes() { ae::cpu::set_conv_chunking(saved_); }
  ChunkBytes(const ChunkBytes&) = delete;
  ChunkBytes& operator=(const ChunkBytes&) = delete;

 private:
  ae::cpu::ConvChunking saved_;
};

}  // namespace

TEST_CASE("conv2d: forward, backward-data and backward-weight match double loops over the sweep") {
  const std::vector<ConvCase> cases = sweep();
  REQUIRE(cases.size() > 60);
  uint64_t seed = 100;
  for (const ConvCase& k : cases) {
    CAPTURE(k.str());
    check_case_against_reference(k, seed);
    seed += 3;
  }
}

TEST_CASE("conv2d: chunked column buffers give the same results, chunks straddling images") {
  // Batch 3 of up to 7 output lines each; 1 and 3 lines per chunk put chunk borders inside and
  // across images, so im2col, col2im, dx's lazy zeroing and the dW accumulation all see partial
  // images. Some shapes leave input rows that no window reads: dx must still be 0 there.
  const std::vector<ConvCase> cases = {
      {3, 13, 17, 5, 4, Conv2dParams{3, 3, 2, 2, 1, 1}},  // OH 7
      {3, 7, 5, 3, 6, Conv2dParams{7, 7, 1, 1, 3, 3}},    // OH 7, windows overlap heavily
      {3, 13, 9, 4, 3, Conv2dParams{3, 1, 2, 1, 0, 2}},   // OH 6, non-square kernel
      {3, 7, 5, 3, 2, Conv2dParams{1, 1, 2, 2, 0, 0}},    // strided 1x1: stride > kernel
      {3, 8, 6, 3, 2, Conv2dParams{1, 1, 2, 2, 0, 0}},    // and the last input row is never read
      {3, 10, 9, 4, 3, Conv2dParams{3, 3, 3, 3, 0, 0}},   // last input row unread, OH 3
  };
  for (const ConvCase& k : cases) {
    const int64_t line_bytes = k.ow() * k.p.kernel_h * k.p.kernel_w * k.c * 4;
    for (int64_t lines : {1, 3}) {
      CAPTURE(k.str());
      CAPTURE(lines);
      ChunkBytes chunk(static_cast<std::size_t>(lines * line_bytes));
      const ae::cpu::ConvGeometry g(k.p, k.x_shape(), k.o);
      REQUIRE(ae::cpu::conv_lines_per_chunk(g) == lines);
      check_case_against_reference(k, 7 + static_cast<uint64_t>(lines));
    }
  }
}

TEST_CASE("conv2d: a 1-byte chunk limit still makes progress one output line at a time") {
  ChunkBytes chunk(1);
  const ConvCase k{2, 7, 5, 3, 4, Conv2dParams{3, 3, 1, 1, 1, 1}};
  const ae::cpu::ConvGeometry g(k.p, k.x_shape(), k.o);
  CHECK(ae::cpu::conv_lines_per_chunk(g) == 1);
  check_case_against_reference(k, 42);
}

TEST_CASE("conv2d: chunk size follows the policy: cache target, minimum rows, hard bound") {
  // OW 10 and K = 1*1*100, so one output line is 4000 bytes of column matrix; 4 x 20 lines.
  const ConvCase k{4, 20, 10, 100, 8, Conv2dParams{1, 1, 1, 1, 0, 0}};
  const ae::cpu::ConvGeometry g(k.p, k.x_shape(), k.o);
  const ae::cpu::ConvChunking saved = ae::cpu::conv_chunking();
  const auto lines = [&](std::size_t target, int64_t min_rows, std::size_t max) {
    ae::cpu::set_conv_chunking({target, min_rows, max});
    return ae::cpu::conv_lines_per_chunk(g);
  };
  CHECK(lines(8000, 0, 1 << 30) == 2);      // the cache target
  CHECK(lines(8000, 35, 1 << 30) == 4);     // raised to hold 35 rows
  CHECK(lines(8000, 1000, 20000) == 5);     // but never above the hard bound
  CHECK(lines(100, 0, 100) == 1);           // at least one line
  CHECK(lines(1 << 30, 0, 1 << 30) == 80);  // at most the whole batch
  ae::cpu::set_conv_chunking(saved);
}

TEST_CASE("parallel_rows covers every row exactly once, also from concurrent callers") {
  const auto run = [](int64_t count, int64_t min_rows, int* calls) {
    std::vector<std::atomic<int>> hits(static_cast<std::size_t>(count));
    std::mutex m;
    ae::cpu::parallel_rows(count, min_rows, [&](int64_t begin, int64_t end) {
      {
        std::lock_guard<std::mutex> lock(m);
        ++*calls;
      }
      for (int64_t i = begin; i < end; ++i) hits[static_cast<std::size_t>(i)]++;
    });
    int64_t bad = 0;
    for (const auto& h : hits) bad += h.load() != 1;
    return bad;
  };
  int calls = 0;
  CHECK(run(1000, 1, &calls) == 0);
  CHECK(calls >= 1);
  calls = 0;
  CHECK(run(10, 6, &calls) == 0);  // too few rows to split: one inline call
  CHECK(calls == 1);
  calls = 0;
  CHECK(run(0, 1, &calls) == 0);
  CHECK(calls == 0);

  std::atomic<int64_t> bad{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 3; ++t)
    callers.emplace_back([&] {
      int c = 0;
      for (int rep = 0; rep < 50; ++rep) bad += run(777, 1, &c);
    });
  for (auto& t : callers) t.join();
  CHECK(bad.load() == 0);
}

TEST_CASE("conv2d: concurrent calls from several threads agree with the reference") {
  const std::vector<ConvCase> cases = {
      {2, 13, 17, 64, 5, Conv2dParams{3, 3, 1, 1, 1, 1}},
      {2, 13, 17, 5, 64, Conv2dParams{7, 7, 2, 2, 3, 3}},
      {1, 7, 5, 64, 64, Conv2dParams{3, 1, 1, 2, 0, 1}},
  };
  std::vector<std::string> failures(cases.size());
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < cases.size(); ++i)
    threads.emplace_back([&, i] {
      const ConvCase& k = cases[i];
      const Tensor x = test::random_tensor(k.x_shape(), 300 + i), w = test::random_tensor(k.w_shape(), 400 + i);
      const Tensor dy = test::random_tensor(k.y_shape(), 500 + i);
      const auto xd = test::to_double(x), wd = test::to_double(w), dyd = test::to_double(dy);
      for (int rep = 0; rep < 3; ++rep) {
        const test::CompareResult results[] = {
            test::compare(ae::ops::conv2d_forward(k.p, x, w), ref_forward(k, xd, wd), kConvTol, "forward"),
            test::compare(ae::ops::conv2d_backward_data(k.p, dy, w, k.x_shape()), ref_backward_data(k, dyd, wd),
                          kConvTol, "backward_data"),
            test::compare(ae::ops::conv2d_backward_weight(k.p, x, dy, k.w_shape()), ref_backward_weight(k, xd, dyd),
                          kConvTol, "backward_weight"),
        };
        for (const auto& r : results)
          if (!r.ok) failures[i] += k.str() + ": " + r.report;
      }
    });
  for (auto& t : threads) t.join();
  for (const std::string& f : failures) CHECK_MESSAGE(f.empty(), f);
}

TEST_CASE("conv2d: inputs that are views at an offset into shared storage") {
  const ConvCase k{1, 7, 5, 3, 4, Conv2dParams{3, 3, 2, 1, 1, 0}};
  const Tensor batch = test::random_tensor({3, 7, 5, 3}, 5);
  const Tensor x = batch.rows(1, 2);  // second image: a view with a non-zero offset
  const Tensor w = test::random_tensor(k.w_shape(), 6);
  const Tensor dy = test::random_tensor(k.y_shape(), 7);
  const auto xd = test::to_double(x), wd = test::to_double(w), dyd = test::to_double(dy);
  AE_REQUIRE_OK(test::compare(ae::ops::conv2d_forward(k.p, x, w), ref_forward(k, xd, wd), kConvTol, "forward"));
  AE_REQUIRE_OK(test::compare(ae::ops::conv2d_backward_weight(k.p, x, dy, k.w_shape()), ref_backward_weight(k, xd, dyd),
                              kConvTol, "backward_weight"));
}

TEST_CASE("conv2d: backward ops match central finite differences of the forward") {
  // loss = sum(y * r) with r random, so dloss/dy = r.
  const std::vector<ConvCase> cases = {
      {2, 5, 4, 3, 4, Conv2dParams{3, 2, 2, 1, 1, 0}},
      {1, 6, 6, 2, 3, Conv2dParams{3, 3, 1, 1, 1, 1}},
      {2, 4, 3, 3, 2, Conv2dParams{1, 1, 1, 1, 0, 0}},  // the copy-free GEMM path
      {1, 7, 5, 2, 2, Conv2dParams{7, 7, 2, 2, 3, 3}},
  };
  const test::Tolerance fd_tol{/*atol=*/2e-3, /*rtol=*/1e-3, /*max_nmse=*/1e-6};
  uint64_t seed = 900;
  for (const ConvCase& k : cases) {
    CAPTURE(k.str());
    Tensor x = test::random_tensor(k.x_shape(), seed++);
    Tensor w = test::random_tensor(k.w_shape(), seed++);
    const Tensor r = test::random_tensor(k.y_shape(), seed++);
    const auto loss = [&] { return test::weighted_sum(ae::ops::conv2d_forward(k.p, x, w), r); };

    const Tensor dx = ae::ops::conv2d_backward_data(k.p, r, w, k.x_shape());
    AE_REQUIRE_OK(test::compare(dx, test::numeric_gradient(x, loss), fd_tol, "dx vs finite differences"));

    const Tensor dw = ae::ops::conv2d_backward_weight(k.p, x, r, k.w_shape());
    AE_REQUIRE_OK(test::compare(dw, test::numeric_gradient(w, loss), fd_tol, "dw vs finite differences"));
  }
}

TEST_CASE("conv2d: bf16 x and w give the bits of the widened f32 operands on every CPU path") {
  // The CPU computes bf16 storage on the exactly widened values: Winograd (3x3 stride 1), the
  // direct forms (batch 1), im2col (stride 2) and the pointwise GEMM (1x1) alike.
  struct Case {
    Shape x;
    int64_t o;
    Conv2dParams p;
  };
  const Case cases[] = {{{2, 9, 11, 8}, 7, {3, 3, 1, 1, 1, 1}},
                        {{1, 5, 5, 3}, 4, {3, 3, 1, 1, 1, 1}},
                        {{2, 9, 9, 5}, 6, {3, 3, 2, 2, 1, 1}},
                        {{2, 4, 4, 16}, 9, {1, 1, 1, 1, 0, 0}}};
  uint64_t seed = 60;
  for (const Case& c : cases) {
    const Tensor xb = ae::ops::cast(test::random_tensor(c.x, seed++), ae::DType::bf16);
    const Tensor wb =
        ae::ops::cast(test::random_tensor({c.o, c.p.kernel_h, c.p.kernel_w, c.x[3]}, seed++), ae::DType::bf16);
    const Tensor y = ae::ops::conv2d_forward(c.p, xb, wb);
    CHECK(y.dtype() == ae::DType::f32);
    CHECK(test::bitwise_equal(y, ae::ops::conv2d_forward(c.p, ae::ops::cast(xb, ae::DType::f32),
                                                         ae::ops::cast(wb, ae::DType::f32))));
  }
  const Tensor xb = ae::ops::cast(Tensor::zeros({1, 5, 5, 3}), ae::DType::bf16);
  const Tensor w = Tensor::zeros({4, 3, 3, 3});
  const Conv2dParams p3{3, 3, 1, 1, 1, 1};
  require_error([&] { ae::ops::conv2d_forward(p3, xb, w); }, {"conv2d_forward", "one dtype", "bf16", "f32"});
  require_error([&] { ae::ops::conv2d_forward(p3, Tensor::zeros({1, 5, 5, 3}, ae::DType::i64), w); },
                {"conv2d_forward", "x", "i64", "must be f32"});
  // The weight gradient takes a stored bf16 x (widened; test_bf16_activations.cpp); the data
  // gradient's w is a master weight, f32 only.
  const Tensor dy = test::random_tensor({1, 5, 5, 4}, 77);
  CHECK(test::bitwise_equal(ae::ops::conv2d_backward_weight(p3, xb, dy, w.shape()),
                            ae::ops::conv2d_backward_weight(p3, ae::ops::cast(xb, ae::DType::f32), dy, w.shape())));
  require_error([&] { ae::ops::conv2d_backward_data(p3, dy, ae::ops::cast(w, ae::DType::bf16), xb.shape()); },
                {"conv2d_backward_data", "w", "bf16", "must be f32"});
}

TEST_CASE("conv2d: bad arguments are ae::Errors naming the op, the argument and the shapes") {
  const Conv2dParams p3{3, 3, 1, 1, 1, 1};
  const Tensor x = Tensor::zeros({1, 5, 5, 3});
  const Tensor w = Tensor::zeros({4, 3, 3, 3});
  const Tensor dy = Tensor::zeros({1, 5, 5, 4});

  SUBCASE("channels of x and w disagree") {
    const Tensor w2 = Tensor::zeros({4, 3, 3, 2});
    require_error([&] { ae::ops::conv2d_forward(p3, x, w2); },
                  {"conv2d_forward", "[1,5,5,3]", "[4,3,3,2]", "channels", "cpu"});
    require_error([&] { ae::ops::conv2d_backward_data(p3, dy, w2, {1, 5, 5, 3}); },
                  {"conv2d_backward_data", "x_shape [1,5,5,3]", "[4,3,3,2]", "channels"});
    require_error([&] { ae::ops::conv2d_backward_weight(p3, x, dy, {4, 3, 3, 2}); },
                  {"conv2d_backward_weight", "w_shape [4,3,3,2]", "[1,5,5,3]", "channels"});
  }
  SUBCASE("wrong number of dimensions") {
    const Tensor x3 = Tensor::zeros({5, 5, 3});
    require_error([&] { ae::ops::conv2d_forward(p3, x3, w); }, {"conv2d_forward", "x", "[5,5,3]", "4 dimensions"});
    require_error([&] { ae::ops::conv2d_backward_data(p3, dy, w, {5, 5, 3}); },
                  {"conv2d_backward_data", "x_shape", "[5,5,3]", "4 dimensions"});
    require_error([&] { ae::ops::conv2d_backward_weight(p3, x, dy, {4, 3, 3}); },
                  {"conv2d_backward_weight", "w_shape", "[4,3,3]", "4 dimensions"});
  }
  SUBCASE("weight kernel size disagrees with the parameters") {
    const Conv2dParams p5{5, 5, 1, 1, 2, 2};
    require_error([&] { ae::ops::conv2d_forward(p5, x, w); }, {"conv2d_forward", "[4,3,3,3]", "kernel 5x5"});
  }
  SUBCASE("output size below 1") {
    const Conv2dParams p7{7, 7, 1, 1, 0, 0};
    const Tensor w7 = Tensor::zeros({4, 7, 7, 3});
    require_error([&] { ae::ops::conv2d_forward(p7, x, w7); },
                  {"conv2d_forward", "output size < 1", "[1,5,5,3]", "kernel 7x7"});
    // (2 + 0 - 3) / 2 + 1 truncates to 1 in C++: the check must not rely on out_h.
    const Conv2dParams p3s2{3, 3, 2, 2, 0, 0};
    const Tensor x2 = Tensor::zeros({1, 2, 2, 3});
    require_error([&] { ae::ops::conv2d_forward(p3s2, x2, w); }, {"conv2d_forward", "output size < 1"});
  }
  SUBCASE("dy does not match the output shape") {
    const Tensor dy_bad = Tensor::zeros({1, 4, 5, 4});
    require_error([&] { ae::ops::conv2d_backward_data(p3, dy_bad, w, {1, 5, 5, 3}); },
                  {"conv2d_backward_data", "dy", "[1,4,5,4]", "[1,5,5,4]"});
    require_error([&] { ae::ops::conv2d_backward_weight(p3, x, dy_bad, {4, 3, 3, 3}); },
                  {"conv2d_backward_weight", "dy", "[1,4,5,4]", "[1,5,5,4]"});
  }
  SUBCASE("non-f32 tensors and invalid parameters") {
    const Tensor xi = Tensor::zeros({1, 5, 5, 3}, ae::DType::i64);
    require_error([&] { ae::ops::conv2d_forward(p3, xi, w); }, {"conv2d_forward", "x", "f32"});
    const Conv2dParams p0{3, 3, 0, 1, 1, 1};
    require_error([&] { ae::ops::conv2d_forward(p0, x, w); }, {"conv2d_forward", "stride 0x1"});
    const Conv2dParams pneg{3, 3, 1, 1, -1, 1};
    require_error([&] { ae::ops::conv2d_backward_weight(pneg, x, dy, {4, 3, 3, 3}); },
                  {"conv2d_backward_weight", "pad -1x1"});
  }
}

namespace {

using ae::cpu::DirectForm;

using DirectScope = ae::test::ScopedConvPath;
using ae::test::direct_isas;

int64_t path_count(DirectForm form) {
  return form == DirectForm::dot ? ae::cpu::conv_path_counts().direct_dot
                                 : ae::cpu::conv_path_counts().direct_broadcast;
}

// The sweep's geometries (1x1 to 7x7 kernels, strides 1 and 2, unequal too, paddings 0 to 3) with
// channel counts that only one form takes, so the forced direct path must take that one:
//   dot: C a multiple of 16 (of both vector widths), O leaving partial register tiles (5 x 4 and
//        3 x 3);
//   broadcast: C of 1 to 7 (no vector multiple), O 64 or 128 (whole channel blocks of 64 and 16);
// pixel counts that are not multiples of any tile's rows in both; batch 1 and 3.
std::vector<ConvCase> direct_sweep(DirectForm form) {
  std::vector<ConvCase> cases = sweep();
  const int64_t dot_c[] = {16, 32, 48, 64}, dot_o[] = {1, 3, 5, 7, 17};
  const int64_t bcast_c[] = {1, 3, 5, 7}, bcast_o[] = {64, 128};
  for (std::size_t i = 0; i < cases.size(); ++i) {
    cases[i].n = i % 2 == 0 ? 1 : 3;
    cases[i].c = form == DirectForm::dot ? dot_c[i % 4] : bcast_c[i % 4];
    cases[i].o = form == DirectForm::dot ? dot_o[(i / 4 + i) % 5] : bcast_o[(i / 4 + i) % 2];
  }
  return cases;
}

// One case per form for the checks that need only one: partial tiles of pixels, a stride.
ConvCase direct_case(DirectForm form) {
  return form == DirectForm::dot ? ConvCase{2, 9, 7, 48, 21, Conv2dParams{3, 3, 2, 1, 1, 1}}
                                 : ConvCase{2, 9, 7, 5, 64, Conv2dParams{3, 3, 2, 1, 1, 1}};
}

}  // namespace

TEST_CASE("conv2d: both direct forms match double loops for every vector ISA, and took that path") {
  const std::vector<ae::cpu::CpuIsa> isas = direct_isas();
  if (isas.empty()) {
    MESSAGE("no AVX2 on this machine: the direct forward is never chosen, nothing to check");
    return;
  }
  for (DirectForm form : {DirectForm::dot, DirectForm::broadcast}) {
    const std::vector<ConvCase> cases = direct_sweep(form);
    for (ae::cpu::CpuIsa isa : isas) {
      CAPTURE(ae::cpu::direct_form_name(form));
      CAPTURE(ae::cpu::cpu_isa_name(isa));
      DirectScope scope(isa);
      ae::cpu::reset_conv_path_counts();
      uint64_t seed = 2000;
      for (const ConvCase& k : cases) {
        CAPTURE(k.str());
        const Tensor x = test::random_tensor(k.x_shape(), seed++), w = test::random_tensor(k.w_shape(), seed++);
        const Tensor y = ae::ops::conv2d_forward(k.p, x, w);
        AE_REQUIRE_OK(test::compare(y, ref_forward(k, test::to_double(x), test::to_double(w)), kConvTol,
                                    "direct forward"));
        // The kernel on its own: x and w in exact-size blocks, y between red zones, pre-filled with
        // NaN: every element written, nothing around it, the same bits as through the dispatch.
        const std::vector<float> xe = test::exact_copy(x), we = test::exact_copy(w);
        test::RedZoned ye(ae::shape_numel(k.y_shape()));
        ae::cpu::conv_direct_forward(ae::cpu::ConvGeometry(k.p, k.x_shape(), k.o), xe.data(), we.data(), ye.data(), isa,
                                     form);
        CHECK(ye.guard_damage() == 0);
        CHECK(ye.unwritten() == 0);
        CHECK(ye.same_bits(y));
      }
      CHECK(path_count(form) == static_cast<int64_t>(cases.size()));
      CHECK(ae::cpu::conv_path_counts().im2col == 0);
      CHECK(ae::cpu::conv_path_counts().pointwise == 0);
    }
  }
}

TEST_CASE("conv2d: the direct forms' bits do not depend on the thread count; they write y and nothing else") {
  for (DirectForm form : {DirectForm::dot, DirectForm::broadcast}) {
    const ConvCase k = direct_case(form);
    const Tensor x = test::random_tensor(k.x_shape(), 71), w = test::random_tensor(k.w_shape(), 72);
    const ae::cpu::ConvGeometry g(k.p, k.x_shape(), k.o);
    for (ae::cpu::CpuIsa isa : direct_isas()) {
      CAPTURE(ae::cpu::direct_form_name(form));
      CAPTURE(ae::cpu::cpu_isa_name(isa));
      DirectScope scope(isa);
      const int saved_threads = ae::thread_count();
      std::vector<Tensor> runs;
      ae::cpu::reset_conv_path_counts();
      for (int threads : {1, 2, 3, 5}) {
        ae::set_thread_count(threads);
        runs.push_back(ae::ops::conv2d_forward(k.p, x, w));
      }
      ae::set_thread_count(saved_threads);
      CHECK(path_count(form) == 4);
      for (std::size_t i = 1; i < runs.size(); ++i) CHECK(test::bitwise_equal(runs[i], runs[0]));
      // Red zones around y, and y itself pre-filled with NaN: every element written, no neighbour.
      const std::vector<float> xe = test::exact_copy(x), we = test::exact_copy(w);
      test::RedZoned ye(ae::shape_numel(k.y_shape()));
      ae::cpu::conv_direct_forward(g, xe.data(), we.data(), ye.data(), isa, form);
      CHECK(ye.guard_damage() == 0);
      CHECK(ye.unwritten() == 0);
      CHECK(ye.same_bits(runs[0]));
    }
  }
}

TEST_CASE("conv2d: backward ops match central finite differences of the direct forms") {
  const test::Tolerance fd_tol{/*atol=*/2e-3, /*rtol=*/1e-3, /*max_nmse=*/1e-6};
  for (DirectForm form : {DirectForm::dot, DirectForm::broadcast}) {
    const ConvCase k = form == DirectForm::dot ? ConvCase{1, 5, 4, 16, 3, Conv2dParams{3, 3, 1, 2, 1, 1}}
                                               : ConvCase{1, 5, 4, 2, 64, Conv2dParams{3, 3, 1, 2, 1, 1}};
    for (ae::cpu::CpuIsa isa : direct_isas()) {
      CAPTURE(ae::cpu::direct_form_name(form));
      CAPTURE(ae::cpu::cpu_isa_name(isa));
      DirectScope scope(isa);
      Tensor x = test::random_tensor(k.x_shape(), 81), w = test::random_tensor(k.w_shape(), 82);
      const Tensor r = test::random_tensor(k.y_shape(), 83);
      const auto loss = [&] { return test::weighted_sum(ae::ops::conv2d_forward(k.p, x, w), r); };
      ae::cpu::reset_conv_path_counts();
      AE_REQUIRE_OK(test::compare(ae::ops::conv2d_backward_data(k.p, r, w, k.x_shape()),
                                  test::numeric_gradient(x, loss), fd_tol, "dx vs finite differences"));
      AE_REQUIRE_OK(test::compare(ae::ops::conv2d_backward_weight(k.p, x, r, k.w_shape()),
                                  test::numeric_gradient(w, loss), fd_tol, "dw vs finite differences"));
      CHECK(path_count(form) > 0);
    }
  }
}

TEST_CASE("conv2d: dispatch of the direct forms: forced, automatic, and never where they cannot run") {
  const Conv2dParams p3{3, 3, 1, 1, 1, 1}, stem{7, 7, 2, 2, 3, 3};
  const Tensor x_small = test::random_tensor({1, 7, 7, 64}, 91), w_small = test::random_tensor({32, 3, 3, 64}, 92);
  const Tensor x_odd = test::random_tensor({1, 7, 7, 12}, 93), w_odd = test::random_tensor({8, 3, 3, 12}, 94);
  const Tensor x_big = test::random_tensor({1, 20, 20, 64}, 95);  // 400 output pixels
  const Tensor x_rgb = test::random_tensor({1, 32, 32, 3}, 96), w_stem = test::random_tensor({64, 7, 7, 3}, 97);
  const Tensor w_wide = test::random_tensor({256, 3, 3, 64}, 98);  // 147 K weights, 256 channels out
  const Tensor x_layer2 = test::random_tensor({1, 28, 28, 128}, 99), w_layer2 = test::random_tensor({128, 3, 3, 128}, 100);
  const Tensor x_layer2_b2 = test::random_tensor({2, 28, 28, 128}, 101);
  const auto& counts = ae::cpu::conv_path_counts;
  for (ae::cpu::CpuIsa isa : direct_isas()) {
    CAPTURE(ae::cpu::cpu_isa_name(isa));
    const bool avx512 = isa == ae::cpu::CpuIsa::avx512;
    {
      DirectScope scope(isa);  // forced: C = 12 and O = 8 suit neither form
      ae::cpu::reset_conv_path_counts();
      ae::ops::conv2d_forward(p3, x_odd, w_odd);
      CHECK(counts().direct_dot + counts().direct_broadcast == 0);
      CHECK(counts().im2col == 1);
      ae::ops::conv2d_backward_data(p3, ae::ops::conv2d_forward(p3, x_small, w_small), w_small, x_small.shape());
      CHECK(counts().direct_dot == 1);  // the forward only
      ae::ops::conv2d_forward(stem, x_rgb, w_stem);
      CHECK(counts().direct_broadcast == 1);
    }
    {
      DirectScope scope(isa, ae::cpu::ConvAlgo::automatic);  // with AVX-512 only
      ae::cpu::reset_conv_path_counts();
      ae::ops::conv2d_forward(p3, x_small, w_small);  // 49 pixels, K 576: the dot form
      CHECK(counts().direct_dot == (avx512 ? 1 : 0));
      ae::ops::conv2d_forward(p3, x_big, w_small);  // 400 pixels, 32 channels out: neither
      ae::ops::conv2d_forward(p3, x_big, w_wide);   // 256 channels out: neither
      CHECK(counts().direct_dot == (avx512 ? 1 : 0));
      CHECK(counts().direct_broadcast == 0);
      ae::ops::conv2d_forward(stem, x_rgb, w_stem);  // the stem: the broadcast form
      CHECK(counts().direct_broadcast == (avx512 ? 1 : 0));
      // Layer2's 3x3 (128 -> 128, 147 K weights): the broadcast form with few pixels only.
      ae::ops::conv2d_forward(p3, x_layer2, w_layer2);  // 784 pixels
      CHECK(counts().direct_broadcast == (avx512 ? 2 : 0));
      ae::ops::conv2d_forward(p3, x_layer2_b2, w_layer2);  // 1568 pixels: Winograd
      CHECK(counts().direct_broadcast == (avx512 ? 2 : 0));
    }
    {
      DirectScope scope(isa, ae::cpu::ConvAlgo::im2col);
      ae::cpu::reset_conv_path_counts();
      ae::ops::conv2d_forward(p3, x_small, w_small);
      ae::ops::conv2d_forward(stem, x_rgb, w_stem);
      CHECK(counts().direct_dot + counts().direct_broadcast == 0);
    }
  }
  // A geometry a form cannot take is refused by name, not computed wrongly.
  if (ae::cpu::cpu_isa_available(ae::cpu::CpuIsa::avx2)) {
    const ae::cpu::ConvGeometry g(p3, x_odd.shape(), 8);
    std::vector<float> y(static_cast<std::size_t>(ae::shape_numel(g.y_shape())));
    for (DirectForm form : {DirectForm::dot, DirectForm::broadcast})
      require_error(
          [&] { ae::cpu::conv_direct_forward(g, x_odd.f32(), w_odd.f32(), y.data(), ae::cpu::CpuIsa::avx2, form); },
          {"conv_direct_forward", ae::cpu::direct_form_name(form), "C = 12", "O = 8", "avx2"});
  }
}
