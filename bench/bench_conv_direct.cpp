// bench_conv_direct: the CPU forward of every ResNet-18 convolution the direct dot-product kernel
// can run (kernels/cpu/conv_direct.h), against im2col + GEMM and, for 3x3 stride-1 layers, Winograd
// F(2x2,3x3), alternating the variants call by call in one process and taking each one's median, so
// machine load affects them alike. Prints time per call, the ratio direct / the best other path (below
// 1: direct is faster) and the output pixels N*OH*OW, against which conv_direct_profitable's
// threshold (kConvDirectMaxPixels) is set.
//
//   bench_conv_direct [--batch N]... [--size S] [--reps R] [--isa avx2|avx512]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cpu/conv_direct.h"
#include "kernels/cpu/winograd.h"
#include "kernels/ops.h"
#include "model/resnet18_shapes.h"
#include "runtime/philox.h"

namespace {

using ae::Tensor;

Tensor random(const ae::Shape& s, uint64_t seed) {
  Tensor t = Tensor::empty(s);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = ae::philox::uniform(seed, static_cast<uint64_t>(i)) - 0.5f;
  return t;
}

double seconds(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> batches;
  int64_t size = 224;
  int reps = 9;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--batch") batches.push_back(std::atoll(argv[i + 1]));
    else if (a == "--size") size = std::atoll(argv[i + 1]);
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else if (a == "--isa") ae::cpu::set_cpu_isa(ae::cpu::parse_cpu_isa(argv[i + 1], "--isa"));
    else {
      std::fprintf(stderr, "usage: %s [--batch N]... [--size S] [--reps R] [--isa avx2|avx512]\n", argv[0]);
      return 2;
    }
  }
  if (batches.empty()) batches = {1, 2, 4};
  std::printf("input %lldx%lld, ISA %s, median of %d alternating calls per variant\n", static_cast<long long>(size),
              static_cast<long long>(size), ae::cpu::cpu_isa_name(ae::cpu::cpu_isa()), reps);
  std::printf("%-16s %-22s %6s %7s %10s %10s %10s %8s\n", "layer", "shape", "batch", "pixels", "im2col ms",
              "F2 ms", "direct ms", "dir/best");
  for (const int64_t batch : batches)
    for (const ae::model::ConvShape& l : ae::model::kResNet18ConvShapes) {
      const int64_t hw = l.hw * size / 224;
      const ae::ops::Conv2dParams p = l.params();
      const ae::ConvGeometry g = l.geometry(batch, hw);
      if (!ae::cpu::conv_direct_applicable(g, ae::cpu::cpu_isa())) continue;
      const bool wino = ae::cpu::winograd_applicable(g);
      const Tensor x = random(g.x_shape(), 1), w = random(g.w_shape(), 2);
      const ae::cpu::ConvAlgo algos[3] = {ae::cpu::ConvAlgo::im2col, ae::cpu::ConvAlgo::winograd,
                                          ae::cpu::ConvAlgo::direct};
      std::vector<double> t[3];
      ae::cpu::set_winograd_tile(2);
      for (int r = 0; r < reps + 1; ++r)
        for (int v = 0; v < 3; ++v) {
          if (v == 1 && !wino) continue;
          ae::cpu::set_conv_algo(algos[v]);
          const double s = seconds([&] { ae::ops::conv2d_forward(p, x, w); });
          if (r > 0) t[v].push_back(s);  // the first round warms caches and workspaces
        }
      const double a = median(t[0]) * 1e3, b = wino ? median(t[1]) * 1e3 : 0.0, c = median(t[2]) * 1e3;
      const double best = wino ? std::min(a, b) : a;
      char shape[64], f2[16];
      std::snprintf(shape, sizeof shape, "%lldx%lldx%lld->%lld k%lld/%lld", static_cast<long long>(g.h),
                    static_cast<long long>(g.w), static_cast<long long>(g.c), static_cast<long long>(g.o),
                    static_cast<long long>(g.kh), static_cast<long long>(g.sh));
      std::snprintf(f2, sizeof f2, wino ? "%.3f" : "-", b);
      std::printf("%-16s %-22s %6lld %7lld %10.3f %10s %10.3f %8.2f\n", l.name, shape, static_cast<long long>(batch),
                  static_cast<long long>(g.m()), a, f2, c, c / best);
    }
  return 0;
}
