// bench_conv_direct: the CPU forward of every ResNet-18 convolution the direct kernels can run
// (kernels/cpu/conv_direct.h: the dot and the broadcast form), against im2col + GEMM and, for 3x3
// stride-1 layers, Winograd F(2x2,3x3), alternating the variants call by call in one process and
// taking each one's median, so machine load affects them alike. Prints time per call, the ratio of
// the faster direct form to the best other path (below 1: direct is faster) and the output pixels
// N*OH*OW, against which conv_direct_profitable's thresholds are set.
//
//   bench_conv_direct [--batch N]... [--size S] [--reps R] [--isa avx2|avx512]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "kernels/cpu/conv_direct.h"
#include "kernels/cpu/winograd.h"
#include "kernels/ops.h"
#include "model/resnet18_shapes.h"

namespace {

using ae::Tensor;
using ae::bench::median;
using ae::bench::seconds;

Tensor random(const ae::Shape& s, uint64_t seed) { return ae::bench::random_tensor(s, seed); }

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
  std::printf("%-16s %-24s %5s %6s %9s %9s %9s %9s %8s\n", "layer", "shape", "batch", "pixels", "im2col ms",
              "F2 ms", "dot ms", "bcast ms", "dir/best");
  using ae::cpu::DirectForm;
  const ae::cpu::CpuIsa isa = ae::cpu::cpu_isa();
  for (const int64_t batch : batches)
    for (const ae::model::ConvShape& l : ae::model::kResNet18ConvShapes) {
      const int64_t hw = l.hw * size / 224;
      const ae::ops::Conv2dParams p = l.params();
      const ae::ConvGeometry g = l.geometry(batch, hw);
      const bool dot = ae::cpu::conv_direct_applicable(g, isa, DirectForm::dot);
      const bool bcast = ae::cpu::conv_direct_applicable(g, isa, DirectForm::broadcast);
      if (!dot && !bcast) continue;
      const bool wino = ae::cpu::winograd_applicable(g);
      const Tensor x = random(g.x_shape(), 1), w = random(g.w_shape(), 2);
      Tensor y = Tensor::empty(g.y_shape());
      // Variants: im2col, Winograd F(2x2) (ops, forced), the dot and broadcast forms (called directly).
      const bool runs[4] = {true, wino, dot, bcast};
      std::vector<double> t[4];
      ae::cpu::set_winograd_tile(2);
      for (int r = 0; r < reps + 1; ++r)
        for (int v = 0; v < 4; ++v) {
          if (!runs[v]) continue;
          const double s = seconds([&] {
            if (v < 2) {
              ae::cpu::set_conv_algo(v == 0 ? ae::cpu::ConvAlgo::im2col : ae::cpu::ConvAlgo::winograd);
              ae::ops::conv2d_forward(p, x, w);
            } else {
              ae::cpu::conv_direct_forward(g, x.f32(), w.f32(), y.f32(), isa,
                                           v == 2 ? DirectForm::dot : DirectForm::broadcast);
            }
          });
          if (r > 0) t[v].push_back(s);  // the first round warms caches and workspaces
        }
      double ms[4];
      for (int v = 0; v < 4; ++v) ms[v] = runs[v] ? median(t[v]) * 1e3 : 0.0;
      const double best_other = wino ? std::min(ms[0], ms[1]) : ms[0];
      const double best_direct = dot && bcast ? std::min(ms[2], ms[3]) : dot ? ms[2] : ms[3];
      char shape[64], cell[4][16];
      std::snprintf(shape, sizeof shape, "%lldx%lldx%lld->%lld k%lld/%lld", static_cast<long long>(g.h),
                    static_cast<long long>(g.w), static_cast<long long>(g.c), static_cast<long long>(g.o),
                    static_cast<long long>(g.kh), static_cast<long long>(g.sh));
      for (int v = 0; v < 4; ++v) std::snprintf(cell[v], sizeof cell[v], runs[v] ? "%.3f" : "-", ms[v]);
      std::printf("%-16s %-24s %5lld %6lld %9s %9s %9s %9s %8.2f\n", l.name, shape, static_cast<long long>(batch),
                  static_cast<long long>(g.m()), cell[0], cell[1], cell[2], cell[3], best_direct / best_other);
    }
  return 0;
}
