// bench_conv: CPU convolution speed on every distinct ResNet-18 conv layer (224x224 input),
// forward, backward-data and backward-weight, each next to OpenBLAS sgemm on the GEMM of the same
// M, N, K and transposes, measured in the same run right after it. The ratio conv/sgemm is what
// the column-buffer work (im2col, col2im, chunking) costs; absolute numbers depend on the machine
// and its load, the ratio much less.
//
//   bench_conv [--batch N] [--quick] [--min-time SECONDS] [--chunk-bytes B] [--chunk-min-rows R]
// The --chunk-* flags override the column-buffer chunking policy (kernels/cpu/im2col.h) for tuning.
// The im2col path is measured throughout (3x3 stride-1 layers would otherwise take Winograd, whose
// cost against im2col bench_winograd measures).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "bench/bench_common.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/im2col.h"
#include "kernels/cpu/winograd.h"
#include "kernels/ops.h"
#include "model/resnet18_shapes.h"
#include "runtime/thread_pool.h"

namespace {

using ae::Shape;
using ae::Tensor;
using ae::ops::Conv2dParams;

// bench_conv's inputs were uniform in [-1, 1).
Tensor random(const Shape& shape, uint64_t seed) { return ae::bench::random_tensor(shape, seed, -1.0f, 1.0f); }

using Layer = ae::model::ConvShape;
constexpr const auto& kLayers = ae::model::kResNet18ConvShapes;

struct Options {
  int64_t batch = 32;
  double min_seconds = 0.5;
};

void usage_and_exit(const char* prog, const std::string& problem) {
  std::fprintf(stderr,
               "%s: %s\nusage: %s [--batch N] [--quick] [--min-time SECONDS] [--chunk-bytes B] [--chunk-min-rows R]\n",
               prog, problem.c_str(), prog);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options opt;
  bool batch_given = false;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_and_exit(argv[0], a + " needs a value");
      return argv[++i];
    };
    if (a == "--quick") {
      quick = true;
    } else if (a == "--batch") {
      opt.batch = std::atoll(value().c_str());
      batch_given = true;
      if (opt.batch < 1) usage_and_exit(argv[0], "--batch must be >= 1");
    } else if (a == "--min-time") {
      opt.min_seconds = std::atof(value().c_str());
      if (!(opt.min_seconds > 0)) usage_and_exit(argv[0], "--min-time must be > 0");
    } else if (a == "--chunk-bytes") {
      ae::cpu::ConvChunking c = ae::cpu::conv_chunking();
      c.target_bytes = static_cast<std::size_t>(std::atoll(value().c_str()));
      c.max_bytes = std::max(c.max_bytes, c.target_bytes);
      ae::cpu::set_conv_chunking(c);
    } else if (a == "--chunk-min-rows") {
      ae::cpu::ConvChunking c = ae::cpu::conv_chunking();
      c.min_rows = std::atoll(value().c_str());
      ae::cpu::set_conv_chunking(c);
    } else if (a == "--help" || a == "-h") {
      usage_and_exit(argv[0], "help");
    } else {
      usage_and_exit(argv[0], "unknown argument " + a);
    }
  }
  if (quick) {
    if (!batch_given) opt.batch = 4;
    opt.min_seconds = 0.05;
  }
  return opt;
}

// Median seconds per call of a and of b. The calls alternate (a, b, a, b, ...) after one
// warm-up each, until both have run for min_seconds and at least 3 times, so that load from
// other processes, which comes and goes, hits both sides of the ratio alike.
std::pair<double, double> time_alternating(const std::function<void()>& a, const std::function<void()>& b,
                                           double min_seconds) {
  using ae::bench::median;
  using ae::bench::seconds;
  a();
  b();
  std::vector<double> ta, tb;
  double total_a = 0, total_b = 0;
  while (ta.size() < 3 || total_a < min_seconds || total_b < min_seconds) {
    ta.push_back(seconds(a));
    tb.push_back(seconds(b));
    total_a += ta.back();
    total_b += tb.back();
  }
  return {median(ta), median(tb)};
}

// The GEMM one conv op performs on the whole batch: C[m,n] = op(A) * op(B).
struct Gemm {
  int64_t m, n, k;
  bool a_trans, b_trans;
};

struct Row {
  double conv_gflops, sgemm_gflops;
  double ratio() const { return conv_gflops / sgemm_gflops; }
};

Row measure(const std::function<void()>& conv, const Gemm& g, double flops, double min_seconds) {
  const Tensor a = random({g.m * g.k}, 11), b = random({g.k * g.n}, 12);
  Tensor c = Tensor::empty({g.m * g.n});
  const auto sgemm = [&] {  // the convolutions' own GEMM entry point (kernels/cpu/gemm.h), same threads
    ae::cpu::sgemm("bench", g.a_trans, g.b_trans, g.m, g.n, g.k, a.f32(), g.a_trans ? g.m : g.k, b.f32(),
                   g.b_trans ? g.k : g.n, 0.0f, c.f32(), g.n);
  };
  const auto [conv_s, sgemm_s] = time_alternating(conv, sgemm, min_seconds);
  return {flops / conv_s * 1e-9, flops / sgemm_s * 1e-9};
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  ae::cpu::set_conv_algo(ae::cpu::ConvAlgo::im2col);
  std::printf(
      "CPU conv vs sgemm of the same M,N,K, batch %lld, %d threads (%s), median of alternating calls, >= %.2f s each\n",
      static_cast<long long>(opt.batch), ae::thread_count(), ae::cpu::blas_info().c_str(), opt.min_seconds);
  const ae::cpu::ConvChunking chunking = ae::cpu::conv_chunking();
  std::printf("column chunks: target %zu bytes, at least %lld rows, at most %zu bytes\n", chunking.target_bytes,
              static_cast<long long>(chunking.min_rows), chunking.max_bytes);
  std::printf("%-15s %-24s %-6s %9s %10s %-22s %6s\n", "layer", "shape", "op", "conv GF/s", "sgemm GF/s", "sgemm M,N,K",
              "ratio");

  double worst_ratio_3x3 = 1e9;
  double worst_ratio_all = 1e9;
  for (const Layer& L : kLayers) {
    const Conv2dParams p = L.params();
    const ae::ConvGeometry g = L.geometry(opt.batch);
    const Shape x_shape = g.x_shape(), w_shape = g.w_shape();
    const int64_t oh = g.oh, ow = g.ow;
    const Tensor x = random(x_shape, 1), w = random(w_shape, 2), dy = random(g.y_shape(), 3);

    const int64_t rows = opt.batch * oh * ow;        // output pixels
    const int64_t inner = int64_t{L.k} * L.k * L.c;  // KH*KW*C
    const double flops = 2.0 * static_cast<double>(rows) * static_cast<double>(L.o) * static_cast<double>(inner);

    char shape[64];
    std::snprintf(shape, sizeof shape, "%lldx%lldx%lld->%lld k%d/%d", static_cast<long long>(L.hw),
                  static_cast<long long>(L.hw), static_cast<long long>(L.c), static_cast<long long>(L.o), L.k,
                  L.stride);

    struct Op {
      const char* name;
      std::function<void()> run;
      Gemm gemm;
    };
    const Op ops[] = {
        {"fwd", [&] { ae::ops::conv2d_forward(p, x, w); }, {rows, L.o, inner, false, true}},
        {"bwd-d", [&] { ae::ops::conv2d_backward_data(p, dy, w, x_shape); }, {rows, inner, L.o, false, false}},
        {"bwd-w", [&] { ae::ops::conv2d_backward_weight(p, x, dy, w_shape); }, {L.o, inner, rows, true, false}},
    };
    for (const Op& op : ops) {
      const Row r = measure(op.run, op.gemm, flops, opt.min_seconds);
      char mnk[40];
      std::snprintf(mnk, sizeof mnk, "%lld,%lld,%lld", static_cast<long long>(op.gemm.m),
                    static_cast<long long>(op.gemm.n), static_cast<long long>(op.gemm.k));
      std::printf("%-15s %-24s %-6s %9.1f %10.1f %-22s %6.2f\n", L.name, shape, op.name, r.conv_gflops, r.sgemm_gflops,
                  mnk, r.ratio());
      std::fflush(stdout);
      worst_ratio_all = std::min(worst_ratio_all, r.ratio());
      if (L.k == 3) worst_ratio_3x3 = std::min(worst_ratio_3x3, r.ratio());
    }
  }
  std::printf("worst conv/sgemm ratio: 3x3 layers %.2f, all layers %.2f\n", worst_ratio_3x3, worst_ratio_all);
  return 0;
}
