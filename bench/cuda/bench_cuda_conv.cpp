// bench_cuda_conv: our CUDA convolutions next to cuDNN's on every distinct ResNet-18 conv layer
// (224x224 input, batch 128 by default): forward, backward-data and backward-weight, TFLOP/s of
// each and the ratio ours/cuDNN (> 1: ours is faster), at the precision --math names, cuDNN with
// its fastest algorithm for the shape at that precision (cudnnFind, as PyTorch's cudnn.benchmark):
//   f32   (default) ours: conv math f32 (CUDA-core FMAs). cuDNN: f32 tensors, CUDNN_FMA_MATH (TF32 off).
//   tf32  ours: f32 tensors in and out, GEMM operands rounded to TF32 on tensor cores, f32
//         accumulation. cuDNN: f32 tensors in and out, CUDNN_DEFAULT_MATH (TF32 tensor cores
//         allowed, as PyTorch's cudnn.allow_tf32; never FP16 down-conversion).
//   bf16  ours: the forward reads the same BF16 x and w as cuDNN (bf16 storage,
//         conv_implicit_gemm.h; the C = 3 stem widens them to f32 and pads x and w to 4 channels
//         first, conv_backward.h "stem path", inside the timed call)
//         and writes an f32 y; the backward passes take f32 tensors and round the GEMM operands to
//         BF16 (nearest even) on tensor cores; f32 accumulation throughout. cuDNN: BF16 tensors in
//         and out (x, w, dy read and y, dx, dw written as bfloat16: the same inputs rounded the
//         same way, by ops::cast), f32 accumulation, CUDNN_TENSOR_OP_MATH: what a BF16 training
//         framework runs, so in the backward passes it moves about half our bytes.
// Each entry: 2 untimed warm-up runs, then runs timed with CUDA events, the L2 cache flushed
// (memset of twice its size) before every run, until >= --min-time seconds of measured time; the
// median run is reported. Every pass is also checked against cuDNN's result (normalised squared
// error, with a tolerance for the precision: 1e-6 f32, 1e-5 tf32, 1e-4 bf16), so a fast but wrong
// kernel cannot hide in the table.
//
// Real GPU only, CUDA build with cuDNN only (the aesthete binary never links cuDNN; this separate
// executable does). Output: a human table, a ratio table, then one machine-readable line per
// entry ("RESULT conv ... math=<f32|tf32|bf16> ...", parsed by scripts/gpu_check_summary.py). Exit 0
// when everything ran and matched, 1 on a mismatch or error, 2 on bad usage or no usable GPU.
//
//   bench_cuda_conv [--batch N] [--math f32|tf32|bf16] [--min-time SECONDS] [--quick] [--workspace-mib M]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cuda/conv_math.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/runtime.h"
#include "kernels/ops.h"
#include "model/resnet18_shapes.h"
#include "runtime/philox.h"
#include "tests/gpu/cudnn/cudnn_reference.h"

namespace {

using ae::Shape;
using ae::Tensor;
using ae::cudnn_ref::ConvPass;
using ae::cudnn_ref::Precision;

using Layer = ae::model::ConvShape;
// The distinct conv shapes of torchvision's ResNet-18 at 224x224 (20 convolutions in all).
constexpr const auto& kLayers = ae::model::kResNet18ConvShapes;
constexpr ConvPass kPasses[] = {ConvPass::forward, ConvPass::backward_data, ConvPass::backward_weight};
// A pass/check disagreement above this normalised squared error is a wrong result, not rounding.
// f32: both sides round only in accumulation. tf32: each side rounds its operands to TF32 its own
// way (ours cvt.rna; cuDNN's is its own), about 1e-7..1e-6 apart. bf16: both multiply the same
// nearest-even BF16 operands, but cuDNN rounds its outputs to BF16 (relative 2^-9: about 1.3e-6).
double mismatch_nmse(Precision math) {
  switch (math) {
    case Precision::f32: return 1e-6;
    case Precision::tf32: return 1e-5;
    case Precision::bf16: return 1e-4;
  }
  return 1e-6;
}

struct Options {
  int64_t batch = 128;
  Precision math = Precision::f32;
  double min_seconds = 0.3;
  std::size_t workspace_bytes = std::size_t{1} << 30;
};

[[noreturn]] void usage_and_exit(const char* prog, const std::string& problem) {
  std::fprintf(stderr,
               "%s: %s\nusage: %s [--batch N] [--math f32|tf32|bf16] [--min-time SECONDS] [--quick] "
               "[--workspace-mib M]\n",
               prog, problem.c_str(), prog);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_and_exit(argv[0], a + " needs a value");
      return argv[++i];
    };
    if (a == "--quick") {
      opt.min_seconds = 0.05;
    } else if (a == "--batch") {
      opt.batch = std::atoll(value().c_str());
      if (opt.batch < 1) usage_and_exit(argv[0], "--batch must be >= 1");
    } else if (a == "--math") {
      const std::string m = value();
      if (m == "f32") {
        opt.math = Precision::f32;
      } else if (m == "tf32") {
        opt.math = Precision::tf32;
      } else if (m == "bf16") {
        opt.math = Precision::bf16;
      } else {
        usage_and_exit(argv[0], "--math must be f32, tf32 or bf16, not '" + m + "'");
      }
    } else if (a == "--min-time") {
      opt.min_seconds = std::atof(value().c_str());
      if (!(opt.min_seconds > 0)) usage_and_exit(argv[0], "--min-time must be > 0");
    } else if (a == "--workspace-mib") {
      const long long mib = std::atoll(value().c_str());
      if (mib < 1) usage_and_exit(argv[0], "--workspace-mib must be >= 1");
      opt.workspace_bytes = static_cast<std::size_t>(mib) << 20;
    } else if (a == "--help" || a == "-h") {
      usage_and_exit(argv[0], "help");
    } else {
      usage_and_exit(argv[0], "unknown argument '" + a + "'");
    }
  }
  return opt;
}

// Uniform in [-1, 1), made on the host (philox, reproducible) and copied to the device.
Tensor random_device_tensor(const Shape& shape, uint64_t seed) {
  Tensor t = Tensor::empty(shape);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = 2.0f * ae::philox::uniform(seed, static_cast<uint64_t>(i)) - 1.0f;
  return t.to(ae::Device::cuda(0));
}

// Evicts the L2 cache between timed runs, so no run finds its operands left there by the last.
class L2Flush {
 public:
  L2Flush() {
    int l2 = 0;
    AE_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
    bytes_ = 2 * static_cast<std::size_t>(std::max(l2, 1 << 20));
    AE_CUDA_CHECK(cudaMalloc(&buffer_, bytes_));
  }
  ~L2Flush() { (void)cudaFree(buffer_); }
  L2Flush(const L2Flush&) = delete;
  L2Flush& operator=(const L2Flush&) = delete;
  void run() {
    AE_CUDA_CHECK(cudaMemsetAsync(buffer_, ++value_ & 0xff, bytes_, nullptr));
  }
  std::size_t bytes() const { return bytes_; }

 private:
  void* buffer_ = nullptr;
  std::size_t bytes_ = 0;
  int value_ = 0;
};

// Times `op` on the default stream (where our kernels and cuDNN run) with CUDA events.
class Timer {
 public:
  Timer() {
    for (auto& e : start_) AE_CUDA_CHECK(cudaEventCreate(&e));
    for (auto& e : stop_) AE_CUDA_CHECK(cudaEventCreate(&e));
  }
  ~Timer() {
    for (auto e : start_) (void)cudaEventDestroy(e);
    for (auto e : stop_) (void)cudaEventDestroy(e);
  }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  struct Result {
    double median_s = 0;
    double measured_s = 0;
    int runs = 0;
  };

  Result measure(const std::function<void()>& op, double min_seconds, L2Flush& flush) {
    for (int i = 0; i < 2; ++i) op();  // warm-up: allocator caches, lazy kernel loading
    AE_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<double> runs_ms;
    double total_ms = 0;
    constexpr std::size_t kMaxRuns = 20000;
    while ((total_ms < 1000.0 * min_seconds || runs_ms.size() < 5) && runs_ms.size() < kMaxRuns) {
      for (int i = 0; i < kBatch; ++i) {
        flush.run();
        AE_CUDA_CHECK(cudaEventRecord(start_[i], nullptr));
        op();
        AE_CUDA_CHECK(cudaEventRecord(stop_[i], nullptr));
      }
      AE_CUDA_CHECK(cudaEventSynchronize(stop_[kBatch - 1]));
      for (int i = 0; i < kBatch; ++i) {
        float ms = 0;
        AE_CUDA_CHECK(cudaEventElapsedTime(&ms, start_[i], stop_[i]));
        runs_ms.push_back(ms);
        total_ms += ms;
      }
    }
    std::sort(runs_ms.begin(), runs_ms.end());
    Result r;
    r.runs = static_cast<int>(runs_ms.size());
    r.median_s = 1e-3 * runs_ms[runs_ms.size() / 2];
    r.measured_s = 1e-3 * total_ms;
    return r;
  }

 private:
  static constexpr int kBatch = 8;  // runs queued between synchronisations
  cudaEvent_t start_[kBatch]{};
  cudaEvent_t stop_[kBatch]{};
};

// sum((a-b)^2) / sum(b^2) in double, on the host.
double nmse(const Tensor& ours, const Tensor& ref) {
  const std::vector<float> a = ours.to_vector(), b = ref.to_vector();
  AE_CHECK(a.size() == b.size(), "nmse: sizes differ: " << ours.desc() << " vs " << ref.desc());
  double err = 0, norm = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    err += d * d;
    norm += static_cast<double>(b[i]) * b[i];
  }
  if (!std::isfinite(err)) return HUGE_VAL;
  return norm > 0 ? err / norm : err;
}

struct Entry {
  const Layer* layer;
  ConvPass pass;
  double gflop;
  double ours_s, cudnn_s;
  int ours_runs, cudnn_runs;
  std::string algo;
  double nmse;
};

std::vector<Entry> bench_layer(const Layer& l, const Options& opt, ae::cudnn_ref::Handle& handle, Timer& timer,
                               L2Flush& flush, uint64_t seed) {
  ae::ops::Conv2dParams p;
  p.kernel_h = p.kernel_w = l.k;
  p.stride_h = p.stride_w = l.stride;
  p.pad_h = p.pad_w = l.pad;
  const Tensor x = random_device_tensor({opt.batch, l.hw, l.hw, l.c}, seed);
  const Tensor w = random_device_tensor({l.o, l.k, l.k, l.c}, seed + 1);
  const Tensor dy = random_device_tensor({opt.batch, p.out_h(l.hw), p.out_w(l.hw), l.o}, seed + 2);
  ae::cudnn_ref::Conv cudnn(handle, p, x.shape(), l.o, opt.math);
  // cuDNN's operands: ours themselves, or (bf16) BF16 copies of them; its outputs in the same kind.
  const bool bf16 = opt.math == Precision::bf16;
  const Tensor xc = bf16 ? ae::cudnn_ref::to_bf16(x) : x;
  const Tensor wc = bf16 ? ae::cudnn_ref::to_bf16(w) : w;
  const Tensor dyc = bf16 ? ae::cudnn_ref::to_bf16(dy) : dy;
  const auto output = [&](const Shape& shape) {
    return bf16 ? ae::cudnn_ref::bf16_empty(shape) : Tensor::empty(shape, ae::DType::f32, ae::Device::cuda(0));
  };
  Tensor y_ref = output(cudnn.y_shape());
  Tensor dx_ref = output(cudnn.x_shape());
  Tensor dw_ref = output(cudnn.w_shape());
  cudnn.choose_algorithms(ae::cudnn_ref::AlgoPolicy::fastest, xc, wc, dyc, y_ref, dx_ref, dw_ref,
                          opt.workspace_bytes);

  std::vector<Entry> out;
  for (const ConvPass pass : kPasses) {
    std::function<Tensor()> ours;
    std::function<void()> theirs;
    Tensor* ref = nullptr;
    switch (pass) {
      case ConvPass::forward:
        ours = [&] { return ae::ops::conv2d_forward(p, bf16 ? xc : x, bf16 ? wc : w); };
        theirs = [&] { cudnn.forward(xc, wc, y_ref); };
        ref = &y_ref;
        break;
      case ConvPass::backward_data:
        ours = [&] { return ae::ops::conv2d_backward_data(p, dy, w, x.shape()); };
        theirs = [&] { cudnn.backward_data(dyc, wc, dx_ref); };
        ref = &dx_ref;
        break;
      case ConvPass::backward_weight:
        ours = [&] { return ae::ops::conv2d_backward_weight(p, x, dy, w.shape()); };
        theirs = [&] { cudnn.backward_weight(xc, dyc, dw_ref); };
        ref = &dw_ref;
        break;
    }
    Entry e{};
    e.layer = &l;
    e.pass = pass;
    e.gflop = cudnn.flops() * 1e-9;
    e.algo = cudnn.algo_name(pass);
    // f32 keeps the plain name (its math is always FMA); otherwise the math type cuDNN measured
    // the algorithm with, e.g. "IMPLICIT_PRECOMP_GEMM/tensor_op".
    if (opt.math != Precision::f32) e.algo += "/" + cudnn.math_type_name(pass);
    const Timer::Result o = timer.measure([&] { (void)ours(); }, opt.min_seconds, flush);
    const Timer::Result c = timer.measure(theirs, opt.min_seconds, flush);
    e.ours_s = o.median_s;
    e.ours_runs = o.runs;
    e.cudnn_s = c.median_s;
    e.cudnn_runs = c.runs;
    theirs();
    e.nmse = nmse(ours(), bf16 ? ae::cudnn_ref::from_bf16(*ref) : *ref);
    out.push_back(e);
  }
  return out;
}

double tflops(double gflop, double seconds) { return seconds > 0 ? gflop / seconds * 1e-3 : 0.0; }

// complete: every layer ran; otherwise the training-step total (and its RESULT line) is left out.
void print_tables(const std::vector<Entry>& entries, const Options& opt, bool complete) {
  const char* math = ae::cudnn_ref::precision_name(opt.math);
  const double tol = mismatch_nmse(opt.math);
  const int algo_width = opt.math == Precision::f32 ? 22 : 32;
  std::printf("\n%-16s %-18s %-16s %7s %-6s %12s %13s %10s  %-*s %9s   (%s)\n", "layer", "x (NHWC)", "w (OHWI)",
              "GFLOP", "pass", "ours TFLOP/s", "cuDNN TFLOP/s", "ours/cuDNN", algo_width, "cuDNN algorithm", "nmse",
              math);
  for (const Entry& e : entries) {
    const Layer& l = *e.layer;
    const std::string xs = std::to_string(opt.batch) + "x" + std::to_string(l.hw) + "x" + std::to_string(l.hw) +
                           "x" + std::to_string(l.c);
    const std::string ws = std::to_string(l.o) + "x" + std::to_string(l.k) + "x" + std::to_string(l.k) + "x" +
                           std::to_string(l.c);
    std::printf("%-16s %-18s %-16s %7.1f %-6s %12.2f %13.2f %10.2f  %-*s %9.1e%s\n", l.name, xs.c_str(), ws.c_str(),
                e.gflop, ae::cudnn_ref::pass_name(e.pass), tflops(e.gflop, e.ours_s), tflops(e.gflop, e.cudnn_s),
                e.cudnn_s / e.ours_s, algo_width, e.algo.c_str(), e.nmse, !(e.nmse <= tol) ? "  MISMATCH" : "");
  }

  // One training step's convolutions: every layer times its count; conv1 has no backward-data
  // (the input gradient is not needed when training).
  double ours_total = 0, cudnn_total = 0;
  std::printf("\n%-16s %8s %8s %8s   ours/cuDNN per pass (x%s = number of such layers)\n", "layer", "fwd", "dgrad",
              "wgrad", "n");
  const Layer* row = nullptr;
  for (const Entry& e : entries) {
    if (e.layer != row) {
      if (row) std::printf("   x%d\n", row->count);
      row = e.layer;
      std::printf("%-16s", row->name);
    }
    std::printf(" %8.2f", e.cudnn_s / e.ours_s);
    const bool in_training = !(e.pass == ConvPass::backward_data && std::string(e.layer->name) == "conv1");
    if (in_training) {
      ours_total += e.layer->count * e.ours_s;
      cudnn_total += e.layer->count * e.cudnn_s;
    }
  }
  if (row) std::printf("   x%d\n", row->count);
  if (complete) {
    std::printf(
        "\nall convolutions of one training step (batch %lld, %s): ours %.2f ms, cuDNN %.2f ms, ours/cuDNN %.2f\n",
        static_cast<long long>(opt.batch), math, 1e3 * ours_total, 1e3 * cudnn_total,
        ours_total > 0 ? cudnn_total / ours_total : 0.0);
  } else {
    std::printf("\nall convolutions of one training step: not summed (some layers failed)\n");
  }

  for (const Entry& e : entries) {
    std::printf("RESULT conv layer=%s pass=%s math=%s gflop=%.3f ours_ms=%.4f cudnn_ms=%.4f ours_tflops=%.3f "
                "cudnn_tflops=%.3f ratio=%.4f algo=%s nmse=%.3e nmse_tol=%.0e runs=%d/%d\n",
                e.layer->name, ae::cudnn_ref::pass_name(e.pass), math, e.gflop, 1e3 * e.ours_s, 1e3 * e.cudnn_s,
                tflops(e.gflop, e.ours_s), tflops(e.gflop, e.cudnn_s), e.cudnn_s / e.ours_s, e.algo.c_str(), e.nmse,
                tol, e.ours_runs, e.cudnn_runs);
  }
  if (complete) {
    std::printf("RESULT conv-step batch=%lld math=%s ours_ms=%.3f cudnn_ms=%.3f ratio=%.4f\n",
                static_cast<long long>(opt.batch), math, 1e3 * ours_total, 1e3 * cudnn_total,
                ours_total > 0 ? cudnn_total / ours_total : 0.0);
  }
}

int run(const Options& opt) {
  const ae::cuda::DeviceInfo& info = ae::cuda::initialize();
  if (!info.usable) {
    std::fprintf(stderr, "bench_cuda_conv: no usable GPU: %s\n", info.reason.c_str());
    return 2;
  }
  if (info.emulated) {
    std::fprintf(stderr, "bench_cuda_conv: built for the emulated device; it times the real GPU only\n");
    return 2;
  }
  // Our kernels at --math, whatever AE_CONV_MATH says; cuDNN at the matching precision (the Conv's
  // Precision: f32 = FMA math, tf32 = f32 tensors with TF32 allowed, bf16 = BF16 tensors).
  switch (opt.math) {
    case Precision::f32: ae::cuda::set_conv_math(ae::cuda::ConvMath::f32); break;
    case Precision::tf32: ae::cuda::set_conv_math(ae::cuda::ConvMath::tf32); break;
    case Precision::bf16: ae::cuda::set_conv_math(ae::cuda::ConvMath::bf16); break;
  }
  ae::cudnn_ref::Handle handle;
  L2Flush flush;
  Timer timer;
  std::printf("bench_cuda_conv: %s; %s\n", info.name.c_str(), ae::cudnn_ref::version_string().c_str());
  const char* what = "";
  switch (opt.math) {
    case Precision::f32:
      what = "math f32: ours reads and writes f32 tensors, f32 FMAs on CUDA cores; cuDNN reads and writes f32 "
             "tensors, CUDNN_FMA_MATH (TF32 off)";
      break;
    case Precision::tf32:
      what = "math tf32: ours reads and writes f32 tensors, GEMM operands rounded to TF32 (cvt.rna) on tensor "
             "cores, f32 accumulation; cuDNN reads and writes f32 tensors, CUDNN_DEFAULT_MATH (TF32 tensor cores "
             "allowed, no FP16 conversion), f32 accumulation";
      break;
    case Precision::bf16:
      what = "math bf16: ours reads f32 x/w/dy and writes f32 y/dx/dw (4 bytes an element), GEMM operands rounded "
             "to BF16 (nearest even) on tensor cores, f32 accumulation; cuDNN reads BF16 x/w/dy (the same values "
             "rounded to nearest even on the host) and writes BF16 y/dx/dw (2 bytes an element: half our memory "
             "traffic), f32 accumulation, CUDNN_TENSOR_OP_MATH";
      break;
  }
  std::printf("batch %lld at 224x224; %s; ours conv math %s; cuDNN's fastest algorithm at that precision (cudnnFind, "
              "workspace <= %zu MiB); L2 flush of %zu MiB before every run; median of >= %.2f s per entry after 2 "
              "warm-up runs; nmse tolerance %.0e\n",
              static_cast<long long>(opt.batch), what, ae::cuda::conv_math_name(ae::cuda::conv_math()),
              opt.workspace_bytes >> 20, flush.bytes() >> 20, opt.min_seconds, mismatch_nmse(opt.math));
  if (opt.math == Precision::tf32) {
    const char* override_tf32 = std::getenv("NVIDIA_TF32_OVERRIDE");
    if (override_tf32 && std::strcmp(override_tf32, "0") == 0) {
      std::printf("warning: NVIDIA_TF32_OVERRIDE=0 is set: cuDNN will not use TF32, its column is float32\n");
    }
  }
  std::fflush(stdout);
  std::vector<Entry> entries;
  uint64_t seed = 1;
  int failed_layers = 0;
  for (const Layer& l : kLayers) {
    std::vector<Entry> e;
    // A layer that fails (e.g. cuDNN offers no algorithm for a shape at this precision) is reported
    // and skipped, so one bad shape does not cost the other layers' rows on a scarce GPU run.
    try {
      e = bench_layer(l, opt, handle, timer, flush, seed += 10);
    } catch (const std::exception& err) {
      ++failed_layers;
      std::fprintf(stderr, "bench_cuda_conv: layer %s (%s): error: %s\n", l.name,
                   ae::cudnn_ref::precision_name(opt.math), err.what());
      std::printf("  %-16s ERROR (see stderr)\n", l.name);
    }
    for (const Entry& x : e) {
      std::printf("  %-16s %-5s ours %8.3f ms  cuDNN %8.3f ms  (%s)\n", l.name, ae::cudnn_ref::pass_name(x.pass),
                  1e3 * x.ours_s, 1e3 * x.cudnn_s, x.algo.c_str());
    }
    std::fflush(stdout);
    entries.insert(entries.end(), e.begin(), e.end());
    ae::cuda::release_cached_memory();  // each layer's buffers differ in size; do not hoard them
  }
  print_tables(entries, opt, failed_layers == 0);
  if (failed_layers > 0) {
    std::fprintf(stderr, "bench_cuda_conv: %d layers failed (see above); no training-step total\n", failed_layers);
    return 1;
  }
  const double tol = mismatch_nmse(opt.math);
  const auto bad = std::count_if(entries.begin(), entries.end(), [&](const Entry& e) { return !(e.nmse <= tol); });
  if (bad > 0) {
    std::fprintf(stderr, "bench_cuda_conv: %lld entries disagree with cuDNN (nmse > %.0e): see MISMATCH above\n",
                 static_cast<long long>(bad), tol);
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  try {
    return run(opt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_conv: error: %s\n", e.what());
    return 1;
  }
}
