// bench_winograd: the CPU 3x3 stride-1 convolutions of ResNet-18 (forward and backward-data) by
// im2col + GEMM against Winograd F(2x2,3x3) and F(4x4,3x3), alternating the variants call by call
// in one process and taking each one's median, so machine load affects them alike. Prints time per
// call and the ratio Winograd / im2col (below 1: Winograd is faster).
//
//   bench_winograd [--batch N] [--size S] [--reps R] [--isa plain|avx2|avx512]
// --size is the network input side (224: layer1 is 56x56); every 3x3 stride-1 layer shape is run.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "bench/bench_common.h"
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
  int64_t batch = 1, size = 224;
  int reps = 7;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--batch") batch = std::atoll(argv[i + 1]);
    else if (a == "--size") size = std::atoll(argv[i + 1]);
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else if (a == "--isa") ae::cpu::set_cpu_isa(ae::cpu::parse_cpu_isa(argv[i + 1], "--isa"));
    else {
      std::fprintf(stderr, "usage: %s [--batch N] [--size S] [--reps R] [--isa plain|avx2|avx512]\n", argv[0]);
      return 2;
    }
  }
  std::printf("batch %lld, input %lldx%lld, ISA %s, median of %d alternating calls per variant\n",
              static_cast<long long>(batch), static_cast<long long>(size), static_cast<long long>(size),
              ae::cpu::cpu_isa_name(ae::cpu::cpu_isa()), reps);
  std::printf("%-12s %-20s %-6s %10s %10s %10s %8s %8s\n", "layer", "shape", "op", "im2col ms", "F2 ms", "F4 ms",
              "F2/im2c", "F4/im2c");
  for (const ae::model::ConvShape& l : ae::model::kResNet18ConvShapes) {
    if (l.k != 3 || l.stride != 1) continue;
    const int64_t hw = l.hw * size / 224;
    const ae::ops::Conv2dParams p = l.params();
    const ae::ConvGeometry g = l.geometry(batch, hw);
    const Tensor x = random(g.x_shape(), 1), w = random(g.w_shape(), 2), dy = random(g.y_shape(), 3);
    for (const char* op : {"fwd", "bwd-d"}) {
      const bool fwd = op[0] == 'f';
      const auto call = [&] {
        if (fwd) ae::ops::conv2d_forward(p, x, w);
        else ae::ops::conv2d_backward_data(p, dy, w, x.shape());
      };
      std::vector<double> t[3];
      for (int r = 0; r < reps + 1; ++r)
        for (int v = 0; v < 3; ++v) {
          ae::cpu::set_conv_algo(v == 0 ? ae::cpu::ConvAlgo::im2col : ae::cpu::ConvAlgo::winograd);
          ae::cpu::set_winograd_tile(v == 2 ? 4 : 2);
          const double s = seconds(call);
          if (r > 0) t[v].push_back(s);  // the first round warms caches and workspaces
        }
      const double a = median(t[0]) * 1e3, b = median(t[1]) * 1e3, c = median(t[2]) * 1e3;
      char shape[64];
      std::snprintf(shape, sizeof shape, "%lldx%lldx%lld->%lld", static_cast<long long>(hw),
                    static_cast<long long>(hw), static_cast<long long>(l.c), static_cast<long long>(l.o));
      std::printf("%-12s %-20s %-6s %10.2f %10.2f %10.2f %8.2f %8.2f\n", l.name, shape, op, a, b, c, b / a, c / a);
    }
  }
  return 0;
}
