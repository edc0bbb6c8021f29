// Profile mode of the emulated device (kernels/emu/profile.h): small kernels whose global-memory
// sectors, coalescing efficiency and shared-memory bank conflicts are known by hand, counted
// exactly; the FLOP annotation and the H200 roofline estimate; nothing recorded when off.
//
// This file is compiled with the profile instrumentation in every emulated build that can
// (tests/CMakeLists.txt), so it runs in the normal CI build. On a real GPU there is nothing to
// profile and the gpu-real/ variant reports Skipped.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"

#if defined(AE_EMULATED_DEVICE)
#include "kernels/cuda/conv_implicit_gemm.h"
#include "kernels/cuda/conv_math.h"
#include "kernels/cuda/launch.h"
#include "kernels/emu/profile.h"
#include "kernels/ops.h"
#include "runtime/tensor.h"

using namespace ae::gputest;
using ae::emu::KernelProfile;

namespace {

struct alignas(16) Vec4 {
  float x, y, z, w;
};

// One float per thread, consecutive: every warp reads and writes 128 contiguous bytes.
__global__ void coalesced_copy_kernel(const float* in, float* out, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = in[i];
}

// Lane i reads in[i * kStride]: a warp's 128 requested bytes spread over 32 * 4 * kStride bytes.
template <int kStride>
__global__ void strided_copy_kernel(const float* in, float* out, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = in[static_cast<int64_t>(i) * kStride];
}

// 32x32 transpose through shared memory, block (32, 32): rows are written, columns read. With a
// row pitch of 32 floats a column lies in one bank (32-way conflict); a pitch of 33 spreads it.
template <int kPitch>
__global__ void transpose_kernel(const float* in, float* out) {
  AE_SHARED(float, tile, 32 * kPitch);
  const int tx = static_cast<int>(threadIdx.x), ty = static_cast<int>(threadIdx.y);
  tile[ty * kPitch + tx] = in[ty * 32 + tx];
  __syncthreads();
  out[ty * 32 + tx] = tile[tx * kPitch + ty];
}

// Lane 0 stages one value; then every lane reads the same shared word and the same global word.
__global__ void broadcast_kernel(const float* in, float* out) {
  AE_SHARED(float, cell, 1);
  if (threadIdx.x == 0) cell[0] = in[0];
  __syncthreads();
  out[threadIdx.x] = cell[0] + in[0];
}

// 16-byte accesses by one warp: global and shared, contiguous (quarter-warp phases without
// conflicts) and with a stride of two vectors (two words per bank in each quarter-warp).
template <int kStride>
__global__ void vec4_kernel(const Vec4* in, Vec4* out) {
  AE_SHARED(Vec4, tile, 32 * kStride);
  const int lane = static_cast<int>(threadIdx.x);
  tile[lane * kStride] = in[lane];
  __syncthreads();
  out[lane] = tile[lane * kStride];
}

// Stands for emulation code compiled without the instrumentation (and never inlined into code with it).
__attribute__((no_sanitize_address)) void copy_uninstrumented(void* dst, const void* src) { std::memcpy(dst, src, 16); }

// An emulation routine that copies on the kernel's behalf (as cp.async does) reports its accesses
// with profile_access: lane i copies 16 bytes at in + 16 * i * kStride into shared memory.
template <int kStride>
__global__ void reported_copy_kernel(const Vec4* in, Vec4* out) {
  AE_SHARED(Vec4, tile, 32);
  const int lane = static_cast<int>(threadIdx.x);
  static const char site = 0;  // one instruction address for every lane
  ae::emu::profile_access(&in[lane * kStride], 16, false, &site);
  ae::emu::profile_access(&tile[lane], 16, true, &site + 1);
  copy_uninstrumented(&tile[lane], &in[lane * kStride]);
  __syncthreads();
  out[lane] = tile[lane];
}

// A long barrier-free loop: lanes of a warp run one after another between barriers, so without a
// bound the profiler would hold every lane's records of the whole loop.
__global__ void long_loop_kernel(const float* in, float* out, int iterations) {
  float sum = 0.0f;
  for (int it = 0; it < iterations; ++it) sum += in[it * 32 + static_cast<int>(threadIdx.x % 32)];
  out[blockIdx.x * blockDim.x + threadIdx.x] = sum;
}

// Profiling on for the scope, with empty totals before and after.
struct Profiling {
  Profiling() {
    ae::emu::profile_reset();
    ae::emu::set_profiling(true);
  }
  ~Profiling() {
    ae::emu::set_profiling(false);
    ae::emu::profile_reset();
  }
};

KernelProfile profile_of(const std::string& kernel) {
  for (const KernelProfile& k : ae::emu::profile_results()) {
    if (k.kernel == kernel) return k;
  }
  FAIL("no profile for kernel " << kernel);
  return {};
}

ae::Tensor device_iota(int64_t n) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  return to_device(ae::Tensor::from_vector({n}, v));
}

// A convolution layer the convolution cases below profile (square input and kernel).
struct ProfiledLayer {
  const char* name;
  int64_t n, h, c, o;
  int k, stride, pad;
  ae::ops::Conv2dParams params() const {
    ae::ops::Conv2dParams p;
    p.kernel_h = p.kernel_w = k;
    p.stride_h = p.stride_w = stride;
    p.pad_h = p.pad_w = pad;
    return p;
  }
  ae::Shape x_shape() const { return {n, h, h, c}; }
  ae::Shape w_shape() const { return {o, k, k, c}; }
  ae::Shape y_shape() const {
    const int64_t oh = params().out_h(h);
    return {n, oh, oh, o};
  }
};

// Random device operands of a layer: x, w (small, as trained weights) and an output gradient dy.
struct LayerOperands {
  ae::Tensor x, w, dy;
};
LayerOperands operands_of(const ProfiledLayer& l) {
  return {to_device(ae::test::random_tensor(l.x_shape(), 1)),
          to_device(ae::test::random_tensor(l.w_shape(), 2, -0.05f, 0.05f)),
          to_device(ae::test::random_tensor(l.y_shape(), 3))};
}

// The stem's forward and backward-weight: with the stem path (the automatic choice pads x to 4
// channels) or with a forced pipelined kernel's 4-byte copies.
void run_stem_passes(const ProfiledLayer& stem, const LayerOperands& t, bool padded) {
  const ae::cuda::ScopedConvForwardKernel fk(padded ? ae::cuda::ConvForwardKernel::automatic
                                                    : ae::cuda::ConvForwardKernel::pipelined_64x64);
  const ae::cuda::ScopedConvBackwardWeightKernel wk(padded ? ae::cuda::ConvBackwardWeightKernel::automatic
                                                           : ae::cuda::ConvBackwardWeightKernel::pipelined_64x64);
  (void)ae::ops::conv2d_forward(stem.params(), t.x, t.w);
  (void)ae::ops::conv2d_backward_weight(stem.params(), t.x, t.dy, stem.w_shape());
}

// Forward, backward-data and backward-weight of a layer, each pipelined kernel forced to 64x64
// (or 128x128) block tiles.
void run_forced_pipelined_passes(const ProfiledLayer& l, const LayerOperands& t, bool large) {
  const ae::cuda::ScopedConvForwardKernel fk(large ? ae::cuda::ConvForwardKernel::pipelined_128x128
                                                   : ae::cuda::ConvForwardKernel::pipelined_64x64);
  const ae::cuda::ScopedConvBackwardDataKernel dk(large ? ae::cuda::ConvBackwardDataKernel::pipelined_128x128
                                                        : ae::cuda::ConvBackwardDataKernel::pipelined_64x64);
  const ae::cuda::ScopedConvBackwardWeightKernel wk(large ? ae::cuda::ConvBackwardWeightKernel::pipelined_128x128
                                                          : ae::cuda::ConvBackwardWeightKernel::pipelined_64x64);
  (void)ae::ops::conv2d_forward(l.params(), t.x, t.w);
  (void)ae::ops::conv2d_backward_data(l.params(), t.dy, t.w, l.x_shape());
  (void)ae::ops::conv2d_backward_weight(l.params(), t.x, t.dy, l.w_shape());
}
const ProfiledLayer kProfiledLayers[] = {{"layer1 3x3 64->64 @28, batch 4", 4, 28, 64, 64, 3, 1, 1},
                                         {"layer3 3x3 256->256 @7, batch 8", 8, 7, 256, 256, 3, 1, 1}};

bool instrumented() {
#if defined(AE_EMU_PROFILE_INSTRUMENTED)
  return true;
#else
  MESSAGE("this build cannot instrument the profile test's kernels (clang or a sanitizer build): counts not checked");
  return false;
#endif
}

}  // namespace

TEST_CASE("a coalesced float copy needs n*4/32 sectors each way: efficiency 100%") {
  AE_GPU_TEST_PRELUDE();
  if (!instrumented()) return;
  const int n = 1024;
  ae::Tensor in = device_iota(n), out = ae::Tensor::empty({n}, ae::DType::f32, device());
  REQUIRE(reinterpret_cast<uintptr_t>(in.f32()) % 128 == 0);
  REQUIRE(reinterpret_cast<uintptr_t>(out.f32()) % 128 == 0);
  {
    Profiling on;
    AE_LAUNCH(coalesced_copy_kernel, dim3(4), dim3(256), 0, nullptr, static_cast<const float*>(in.f32()), out.f32(), n);
    const KernelProfile k = profile_of("coalesced_copy_kernel");
    CHECK(k.launches == 1);
    CHECK(k.blocks == 4);
    CHECK(k.threads == 1024);
    CHECK(k.global_load.accesses == 32);  // 1024 threads = 32 warps, one load each
    CHECK(k.global_load.requested_bytes == 4096);
    CHECK(k.global_load.sectors == 128);  // n * 4 / 32
    CHECK(k.global_load.ideal_sectors == 128);
    CHECK(k.global_load.efficiency() == 1.0);
    CHECK(k.global_store.accesses == 32);
    CHECK(k.global_store.sectors == 128);
    CHECK(k.global_store.ideal_sectors == 128);
    CHECK(k.global_sector_bytes() == 8192);
    CHECK(k.shared_load.accesses == 0);
    CHECK(k.shared_store.accesses == 0);
  }
  const std::vector<float> got = out.to_vector();
  for (int i = 0; i < n; ++i) REQUIRE(got[static_cast<std::size_t>(i)] == static_cast<float>(i));
  require_guards_intact();
}

TEST_CASE("strided loads waste sectors: stride 2 is 50% efficient, stride 32 is 12.5%") {
  AE_GPU_TEST_PRELUDE();
  if (!instrumented()) return;
  const int n = 1024;
  ae::Tensor in = device_iota(n * 32), out = ae::Tensor::empty({n}, ae::DType::f32, device());
  REQUIRE(reinterpret_cast<uintptr_t>(in.f32()) % 128 == 0);
  Profiling on;
  AE_LAUNCH(strided_copy_kernel<2>, dim3(4), dim3(256), 0, nullptr, static_cast<const float*>(in.f32()), out.f32(), n);
  AE_LAUNCH(strided_copy_kernel<32>, dim3(4), dim3(256), 0, nullptr, static_cast<const float*>(in.f32()), out.f32(),
            n);
  const KernelProfile s2 = profile_of("strided_copy_kernel<2>");
  CHECK(s2.global_load.accesses == 32);
  CHECK(s2.global_load.requested_bytes == 4096);
  CHECK(s2.global_load.sectors == 256);  // 256 bytes spanned per warp = 8 sectors
  CHECK(s2.global_load.ideal_sectors == 128);
  CHECK(s2.global_load.efficiency() == 0.5);
  CHECK(s2.global_store.sectors == 128);
  CHECK(s2.global_store.efficiency() == 1.0);
  const KernelProfile s32 = profile_of("strided_copy_kernel<32>");
  CHECK(s32.global_load.accesses == 32);
  CHECK(s32.global_load.sectors == 1024);  // one sector per lane
  CHECK(s32.global_load.ideal_sectors == 128);
  CHECK(s32.global_load.efficiency() == 0.125);
  const std::vector<float> got = out.to_vector();
  for (int i = 0; i < n; ++i) REQUIRE(got[static_cast<std::size_t>(i)] == static_cast<float>(i * 32));
}

TEST_CASE("a 32x32 shared transpose: 31 conflicts per column access without padding, none with 33 columns") {
  AE_GPU_TEST_PRELUDE();
  if (!instrumented()) return;
  ae::Tensor in = device_iota(32 * 32), out = ae::Tensor::empty({32 * 32}, ae::DType::f32, device());
  Profiling on;
  AE_LAUNCH(transpose_kernel<32>, dim3(1), dim3(32, 32), 0, nullptr, static_cast<const float*>(in.f32()), out.f32());
  const std::vector<float> got = out.to_vector();
  for (int r = 0; r < 32; ++r) {
    for (int c = 0; c < 32; ++c) REQUIRE(got[static_cast<std::size_t>(r * 32 + c)] == static_cast<float>(c * 32 + r));
  }
  AE_LAUNCH(transpose_kernel<33>, dim3(1), dim3(32, 32), 0, nullptr, static_cast<const float*>(in.f32()), out.f32());

  const KernelProfile plain = profile_of("transpose_kernel<32>");
  CHECK(plain.shared_store.accesses == 32);  // the row writes: one wavefront each
  CHECK(plain.shared_store.wavefronts == 32);
  CHECK(plain.shared_store.conflicts() == 0);
  CHECK(plain.shared_load.accesses == 32);  // the column reads: 32 words in one bank
  CHECK(plain.shared_load.wavefronts == 32 * 32);
  CHECK(plain.shared_load.conflicts() == 32 * 31);
  CHECK(plain.shared_load.requested_bytes == 4096);
  CHECK(plain.global_load.sectors == 128);
  CHECK(plain.global_store.sectors == 128);
  CHECK(plain.global_load.efficiency() == 1.0);

  const KernelProfile padded = profile_of("transpose_kernel<33>");
  CHECK(padded.shared_store.accesses == 32);
  CHECK(padded.shared_store.conflicts() == 0);
  CHECK(padded.shared_load.accesses == 32);
  CHECK(padded.shared_load.wavefronts == 32);
  CHECK(padded.shared_load.conflicts() == 0);
}

TEST_CASE("a broadcast (all lanes on one word) has no conflict and needs one sector") {
  AE_GPU_TEST_PRELUDE();
  if (!instrumented()) return;
  ae::Tensor in = device_iota(32), out = ae::Tensor::empty({32}, ae::DType::f32, device());
  Profiling on;
  AE_LAUNCH(broadcast_kernel, dim3(1), dim3(32), 0, nullptr, static_cast<const float*>(in.f32()), out.f32());
  const KernelProfile k = profile_of("broadcast_kernel");
  CHECK(k.shared_store.accesses == 1);  // lane 0 alone
  CHECK(k.shared_store.wavefronts == 1);
  CHECK(k.shared_load.accesses == 1);
  CHECK(k.shared_load.wavefronts == 1);
  CHECK(k.shared_load.conflicts() == 0);
  CHECK(k.shared_load.requested_bytes == 128);
  // Two global loads of in[0]: lane 0's alone, then all 32 lanes' (128 bytes asked, 4 distinct).
  CHECK(k.global_load.accesses == 2);
  CHECK(k.global_load.requested_bytes == 4 + 128);
  CHECK(k.global_load.sectors == 2);
  CHECK(k.global_load.ideal_sectors == 2);
  CHECK(k.global_store.sectors == 4);
  for (float v : out.to_vector()) CHECK(v == 0.0f);
}

TEST_CASE("16-byte accesses: 16 sectors per warp, quarter-warp phases in shared memory") {
  AE_GPU_TEST_PRELUDE();
  if (!instrumented()) return;
  ae::Tensor in = device_iota(32 * 4), out = ae::Tensor::empty({32 * 4}, ae::DType::f32, device());
  const Vec4* in4 = reinterpret_cast<const Vec4*>(in.f32());
  Vec4* out4 = reinterpret_cast<Vec4*>(out.f32());
  Profiling on;
  AE_LAUNCH(vec4_kernel<1>, dim3(1), dim3(32), 0, nullptr, in4, out4);
  AE_LAUNCH(vec4_kernel<2>, dim3(1), dim3(32), 0, nullptr, in4, out4);
  const KernelProfile dense = profile_of("vec4_kernel<1>");
  CHECK(dense.global_load.accesses == 1);
  CHECK(dense.global_load.requested_bytes == 512);
  CHECK(dense.global_load.sectors == 16);
  CHECK(dense.global_load.efficiency() == 1.0);
  CHECK(dense.global_store.sectors == 16);
  CHECK(dense.shared_store.accesses == 1);
  CHECK(dense.shared_store.wavefronts == 4);  // one per quarter-warp
  CHECK(dense.shared_store.conflicts() == 0);
  CHECK(dense.shared_load.wavefronts == 4);
  CHECK(dense.shared_load.conflicts() == 0);
  // Stride of two vectors (32 bytes): a quarter-warp covers words 0-3, 8-11, ..., 56-59, two per bank.
  const KernelProfile strided = profile_of("vec4_kernel<2>");
  CHECK(strided.shared_store.wavefronts == 8);
  CHECK(strided.shared_store.conflicts() == 4);
  CHECK(strided.shared_load.wavefronts == 8);
  CHECK(strided.shared_load.conflicts() == 4);
  CHECK(strided.global_load.sectors == 16);
  const std::vector<float> got = out.to_vector();
  for (int i = 0; i < 32 * 4; ++i) REQUIRE(got[static_cast<std::size_t>(i)] == static_cast<float>(i));
}

TEST_CASE("accesses reported by uninstrumented emulation code (cp.async) are counted like the kernel's") {
  AE_GPU_TEST_PRELUDE();
  if (!instrumented()) return;
  ae::Tensor in = device_iota(32 * 4 * 2), out = ae::Tensor::empty({32 * 4}, ae::DType::f32, device());
  const Vec4* in4 = reinterpret_cast<const Vec4*>(in.f32());
  Profiling on;
  AE_LAUNCH(reported_copy_kernel<2>, dim3(1), dim3(32), 0, nullptr, in4, reinterpret_cast<Vec4*>(out.f32()));
  const KernelProfile k = profile_of("reported_copy_kernel<2>");
  CHECK(k.global_load.accesses == 1);
  CHECK(k.global_load.requested_bytes == 512);
  CHECK(k.global_load.sectors == 32);  // 16 bytes used of every 32
  CHECK(k.global_load.ideal_sectors == 16);
  CHECK(k.shared_store.accesses == 1);
  CHECK(k.shared_store.wavefronts == 4);
  CHECK(k.shared_load.wavefronts == 4);
  CHECK(k.global_store.sectors == 16);
  const std::vector<float> got = out.to_vector();
  for (int i = 0; i < 32 * 4; ++i) REQUIRE(got[static_cast<std::size_t>(i)] == static_cast<float>(i / 4 * 8 + i % 4));
}

TEST_CASE("a long barrier-free loop stays exact while the pending records stay bounded") {
  AE_GPU_TEST_PRELUDE();
  if (!instrumented()) return;
  const int iterations = 256, threads = 256;
  ae::Tensor in = device_iota(int64_t{iterations} * 32), out = ae::Tensor::empty({threads}, ae::DType::f32, device());
  const std::size_t saved_limit = ae::emu::profile_max_pending();
  ae::emu::set_profile_max_pending(512);  // two lanes' worth of the loop: the rest must be switched out
  Profiling on;
  AE_LAUNCH(long_loop_kernel, dim3(1), dim3(threads), 0, nullptr, static_cast<const float*>(in.f32()), out.f32(),
            iterations);
  ae::emu::set_profile_max_pending(saved_limit);
  const KernelProfile k = profile_of("long_loop_kernel");
  CHECK(k.preemptions > 0);
  // 8 warps x 256 coalesced loads, every one matched across its 32 lanes despite the switches.
  CHECK(k.global_load.accesses == 8 * 256);
  CHECK(k.global_load.sectors == 8 * 256 * 4);
  CHECK(k.global_load.efficiency() == 1.0);
  CHECK(k.global_store.sectors == 32);
  const std::vector<float> got = out.to_vector();
  for (int t = 0; t < threads; ++t) {
    // sum over it of (it * 32 + lane): integers below 2^24, so exact in float
    const int lane = t % 32;
    const float want = static_cast<float>(32 * iterations * (iterations - 1) / 2 + lane * iterations);
    REQUIRE(got[static_cast<std::size_t>(t)] == want);
  }
}

TEST_CASE("declared FLOPs and the H200 roofline estimate") {
  AE_GPU_TEST_PRELUDE();
  {
    Profiling on;
    ae::emu::profile_note_flops("gemm_like", 67e9, "f32");   // 1 ms at 67 TFLOP/s
    ae::emu::profile_note_flops("gemm_like", 495e9, "tf32");  // + 1 ms at 495 TFLOP/s
    ae::emu::profile_note_flops("gemm_like", 989e9, "bf16");  // + 1 ms at 989 TFLOP/s
    CHECK_THROWS_WITH_AS(ae::emu::profile_note_flops("gemm_like", 1.0, "fp64"), doctest::Contains("fp64"), ae::Error);
    const KernelProfile k = profile_of("gemm_like");
    CHECK(k.flops_f32 == 67e9);
    CHECK(k.flops_tf32 == 495e9);
    CHECK(k.flops_bf16 == 989e9);
    CHECK(k.launches == 0);
    const ae::emu::RooflineEstimate r = ae::emu::roofline_h200(k);
    CHECK(r.compute_s == doctest::Approx(3e-3));
    CHECK(r.bytes == 0.0);
    CHECK(r.estimate_s == doctest::Approx(3e-3));
    CHECK_FALSE(r.memory_bound);
  }
  // Hand-made totals: 4.8e9 sector bytes take 1 ms at 4.8 TB/s; 6.7e9 f32 FLOPs take 0.1 ms.
  KernelProfile k;
  k.global_load.sectors = 100'000'000;
  k.global_store.sectors = 50'000'000;
  k.flops_f32 = 6.7e9;
  const ae::emu::RooflineEstimate r = ae::emu::roofline_h200(k);
  CHECK(r.bytes == 4.8e9);
  CHECK(r.memory_s == doctest::Approx(1e-3));
  CHECK(r.compute_s == doctest::Approx(1e-4));
  CHECK(r.estimate_s == doctest::Approx(1e-3));
  CHECK(r.intensity == doctest::Approx(6.7e9 / 4.8e9));
  CHECK(r.memory_bound);
}

TEST_CASE("FLOPs declared for launched kernels reach their rows, the table and the CSV") {
  AE_GPU_TEST_PRELUDE();
  if (!instrumented()) return;
  const int n = 1024;
  ae::Tensor in = device_iota(n), out = ae::Tensor::empty({n}, ae::DType::f32, device());
  Profiling on;
  for (int launch = 0; launch < 2; ++launch) {
    ae::emu::profile_note_flops("coalesced_copy_kernel", 1024.0, "f32");
    AE_LAUNCH(coalesced_copy_kernel, dim3(4), dim3(256), 0, nullptr, static_cast<const float*>(in.f32()), out.f32(),
              n);
  }
  const KernelProfile k = profile_of("coalesced_copy_kernel");
  CHECK(k.launches == 2);
  CHECK(k.flops_f32 == 2048.0);
  CHECK(k.global_sector_bytes() == 2 * 8192);
  const ae::emu::RooflineEstimate r = ae::emu::roofline_h200(k);
  CHECK(r.intensity == doctest::Approx(2048.0 / 16384.0));
  CHECK(r.memory_s == doctest::Approx(16384.0 / 4.8e12));
  CHECK(r.estimate_s == r.memory_s);
  CHECK(r.memory_bound);


  // FLOPs for whatever kernel launches next (a launch site that dispatches among kernels).
  ae::emu::profile_next_launch_flops(3000.0, "f32");
  ae::emu::profile_next_launch_flops(1000.0, "tf32");
  AE_LAUNCH(transpose_kernel<33>, dim3(1), dim3(32, 32), 0, nullptr, static_cast<const float*>(in.f32()), out.f32());
  AE_LAUNCH(transpose_kernel<33>, dim3(1), dim3(32, 32), 0, nullptr, static_cast<const float*>(in.f32()), out.f32());
  const KernelProfile t = profile_of("transpose_kernel<33>");
  CHECK(t.launches == 2);
  CHECK(t.flops_f32 == 3000.0);  // taken by the first launch only
  CHECK(t.flops_tf32 == 1000.0);
  CHECK(ae::emu::roofline_h200(t).compute_s == doctest::Approx(3000.0 / 67e12 + 1000.0 / 495e12));
  CHECK(profile_of("coalesced_copy_kernel").flops_f32 == 2048.0);

  const std::string table = ae::emu::profile_table();
  CHECK(table.find("ESTIMATE") != std::string::npos);
  CHECK(table.find("| coalesced_copy_kernel | 2 | 64 / 256 / 100.0% | 64 / 256 / 100.0% |") != std::string::npos);
  const std::string csv_path = ae::test::build_dir() + "/test_emu_profile.csv";
  ae::emu::write_profile_csv(csv_path);
  std::ifstream f(csv_path);
  std::stringstream text;
  text << f.rdbuf();
  CHECK(text.str().find("\"coalesced_copy_kernel\",2,8,2048,64,8192,256,256,64,8192,256,256,") != std::string::npos);
  std::remove(csv_path.c_str());
}

TEST_CASE("with profiling off nothing is recorded") {
  AE_GPU_TEST_PRELUDE();
  const int n = 1024;
  ae::Tensor in = device_iota(n), out = ae::Tensor::empty({n}, ae::DType::f32, device());
  ae::emu::profile_reset();
  ae::emu::set_profiling(false);
  REQUIRE_FALSE(ae::emu::profiling());
  AE_LAUNCH(coalesced_copy_kernel, dim3(4), dim3(256), 0, nullptr, static_cast<const float*>(in.f32()), out.f32(), n);
  AE_LAUNCH(transpose_kernel<32>, dim3(1), dim3(32, 32), 0, nullptr, static_cast<const float*>(in.f32()), out.f32());
  ae::emu::profile_note_flops("coalesced_copy_kernel", 1e9, "f32");
  ae::emu::profile_next_launch_flops(1e9, "f32");
  CHECK(ae::emu::profile_results().empty());
  // The kernels still ran.
  const std::vector<float> got = out.to_vector();
  CHECK(got[1] == 32.0f);
  // A declaration made while off is not kept for the next profiled launch.
  ae::emu::set_profiling(true);
  AE_LAUNCH(coalesced_copy_kernel, dim3(4), dim3(256), 0, nullptr, static_cast<const float*>(in.f32()), out.f32(), n);
  ae::emu::set_profiling(false);
  CHECK(profile_of("coalesced_copy_kernel").flops() == 0.0);
  ae::emu::profile_reset();
  require_guards_intact();
}

// Issue 15's coalescing target (>= 90 % in the conv main loops) for the C = 3 stem, which the
// automatic choice pads (conv_backward.h, "stem path"). The kernels' operand loads are all cp.async
// copies, which the emulation reports in every build (instrumented kernels or not), so the counts
// are the same as in a -DAE_EMU_PROFILE=ON build. Forcing the pipelined kernel keeps the 4-byte
// copies, which stay well below: the check tells the paths apart. The forward's weight rows are
// padded to 32-byte multiples (pad_stem_weight); with dense 784-byte rows it measured 87.4 % here.
TEST_CASE("the stem path's operand copies are at least 90 % sector-efficient (forward and backward-weight)") {
  AE_GPU_TEST_PRELUDE();
  const ProfiledLayer stem{"stem 7x7/2 3->64 @64", 1, 64, 3, 64, 7, 2, 3};
  const LayerOperands t = operands_of(stem);
  const ae::cuda::ScopedConvMath tf32(ae::cuda::ConvMath::tf32);
  const auto efficiencies = [&](bool padded) {
    Profiling on;
    run_stem_passes(stem, t, padded);
    const KernelProfile fwd = profile_of("conv2d_forward (pipelined implicit GEMM)");
    const KernelProfile wgrad = profile_of(padded ? "conv2d_backward_weight (pipelined implicit GEMM, stem padded to 4 channels)"
                                                  : "conv2d_backward_weight (pipelined implicit GEMM)");
    REQUIRE(fwd.global_load.accesses > 0);
    REQUIRE(wgrad.global_load.accesses > 0);
    return std::pair{fwd.global_load.efficiency(), wgrad.global_load.efficiency()};
  };
  const auto [fwd4, wgrad4] = efficiencies(false);
  const auto [fwd, wgrad] = efficiencies(true);
  MESSAGE("load sector efficiency, 4-byte copies: forward " << fwd4 << ", backward-weight " << wgrad4
                                                            << "; stem path: " << fwd << ", " << wgrad);
  CHECK(fwd >= 0.90);
  CHECK(wgrad >= 0.90);
  CHECK(fwd4 < 0.60);
  CHECK(wgrad4 < 0.60);
}

// Issue 15's "no bank conflicts in the conv main loops", for the three pipelined convolutions in
// tf32 and bf16 with both tilings. Their shared-memory traffic is cp.async stores, ldmatrix reads
// and 8-byte fragment pairs, all of which the emulation reports in every build
// (kernels/emu/profile.h, load_reported), so this runs in CI's default build. With the plain
// swizzle (row % 8) the bf16 pairs read from f32 stages had a 2-way conflict each (the forward and
// backward-data rows here fail then).
TEST_CASE("the pipelined convolutions read and write shared memory without bank conflicts (tf32, bf16)") {
  AE_GPU_TEST_PRELUDE();
  const ProfiledLayer layer{"3x3 64->64 @8", 2, 8, 64, 64, 3, 1, 1};
  const LayerOperands t = operands_of(layer);
  for (const bool large : {false, true}) {
    for (const ae::cuda::ConvMath math : {ae::cuda::ConvMath::tf32, ae::cuda::ConvMath::bf16}) {
      const ae::cuda::ScopedConvMath mode(math);
      Profiling on;
      run_forced_pipelined_passes(layer, t, large);
      int kernels = 0;
      for (const KernelProfile& k : ae::emu::profile_results()) {
        if (k.kernel.find("pipelined") == std::string::npos) continue;
        ++kernels;
        CAPTURE(k.kernel);
        const std::string math_name = ae::cuda::conv_math_name(math);
        CAPTURE(math_name);
        CAPTURE(large);
        CHECK(k.shared_load.accesses > 0);
        CHECK(k.shared_store.accesses > 0);
        CHECK(k.shared_load.conflicts() == 0);
        CHECK(k.shared_store.conflicts() == 0);
      }
      CHECK(kernels == 3);
    }
  }
}

// Not run by ctest (doctest skip): the profile of the real convolution kernels on ResNet-18 layer
// shapes at batch 1 and a 112x112 input, for bench/RESULTS.md. Needs a -DAE_EMU_PROFILE=ON build:
//   tests/gpu_test_emu_profile --no-skip -tc='*ResNet-18*'
TEST_CASE("profile of the convolution kernels on ResNet-18 layers (manual: --no-skip)" * doctest::skip()) {
  AE_GPU_TEST_PRELUDE();
  struct Layer {
    const char* name;
    int64_t h, c, o;
    int k, stride, pad;
  };
  const Layer layers[] = {{"stem 7x7/2 3->64 @112", 112, 3, 64, 7, 2, 3},
                          {"layer1 3x3 64->64 @28", 28, 64, 64, 3, 1, 1},
                          {"layer2 3x3/2 64->128 @28", 28, 64, 128, 3, 2, 1},
                          {"layer3 3x3 256->256 @7", 7, 256, 256, 3, 1, 1}};
  const ae::cuda::ConvMath saved = ae::cuda::conv_math();
  for (const char* math : {"f32", "tf32"}) {
    ae::cuda::set_conv_math(ae::cuda::parse_conv_math(math, "profile"));
    for (const Layer& l : layers) {
      ae::ops::Conv2dParams p;
      p.kernel_h = p.kernel_w = l.k;
      p.stride_h = p.stride_w = l.stride;
      p.pad_h = p.pad_w = l.pad;
      const ae::Shape x_shape{1, l.h, l.h, l.c}, w_shape{l.o, l.k, l.k, l.c};
      const int64_t oh = p.out_h(l.h);
      std::vector<float> xv(static_cast<std::size_t>(l.h * l.h * l.c)), wv(static_cast<std::size_t>(l.o * l.k * l.k * l.c)),
          dyv(static_cast<std::size_t>(oh * oh * l.o));
      for (std::size_t i = 0; i < xv.size(); ++i) xv[i] = static_cast<float>(i % 7) * 0.25f;
      for (std::size_t i = 0; i < wv.size(); ++i) wv[i] = static_cast<float>(i % 5) * 0.125f;
      for (std::size_t i = 0; i < dyv.size(); ++i) dyv[i] = static_cast<float>(i % 3) * 0.5f;
      const ae::Tensor x = to_device(ae::Tensor::from_vector(x_shape, xv));
      const ae::Tensor w = to_device(ae::Tensor::from_vector(w_shape, wv));
      const ae::Tensor dy = to_device(ae::Tensor::from_vector({1, oh, oh, l.o}, dyv));
      Profiling on;
      (void)ae::ops::conv2d_forward(p, x, w);
      if (std::string(math) == "f32") {
        (void)ae::ops::conv2d_backward_data(p, dy, w, x_shape);
        (void)ae::ops::conv2d_backward_weight(p, x, dy, w_shape);
      }
      std::printf("\n### %s, %s\n\n%s", l.name, math, ae::emu::profile_table().c_str());
    }
  }
  ae::cuda::set_conv_math(saved);
}

// Not run by ctest either: the global traffic of a training convolution + BatchNorm + residual +
// ReLU, layer by layer (conv2d_forward, batchnorm_forward_train's two statistics passes and its
// normalisation, add_relu) against ops::conv2d_batchnorm_train (statistics in the conv's epilogue,
// one apply pass), for bench/RESULTS.md. The profile has no cache model: the epilogue's re-read of
// the tile it has just stored (an L2 hit on a GPU) is counted as global traffic like the rest.
//   tests/gpu_test_emu_profile --no-skip -tc='*training convolution*'
TEST_CASE("profile of a training convolution + BatchNorm: fused against layers (manual: --no-skip)" * doctest::skip()) {
  AE_GPU_TEST_PRELUDE();
  const ae::cuda::ConvMath saved = ae::cuda::conv_math();
  ae::cuda::set_conv_math(ae::cuda::ConvMath::tf32);
  // Unsplit, as at training batch sizes (at these small batches the automatic split-K would run, and
  // with it the statistics' separate pass instead of the epilogue).
  const ae::cuda::ScopedConvForwardSplitK unsplit(1);
  for (const ProfiledLayer& l : kProfiledLayers) {
    const ae::ops::Conv2dParams p = l.params();
    const LayerOperands t = operands_of(l);
    const ae::Tensor &x = t.x, &w = t.w, &r = t.dy;  // dy's shape serves as the residual
    const ae::Tensor gamma = to_device(ae::Tensor::full({l.o}, 1.0f)), beta = to_device(ae::Tensor::zeros({l.o}));
    double totals[2] = {0, 0};
    for (int fused = 0; fused < 2; ++fused) {
      ae::Tensor rm = to_device(ae::Tensor::zeros({l.o})), rv = to_device(ae::Tensor::full({l.o}, 1.0f));
      ae::ops::BatchNormParams bn;
      {
        Profiling on;
        if (fused == 1) {
          (void)ae::ops::conv2d_batchnorm_train(p, bn, true, x, w, gamma, beta, rm, rv, r);
        } else {
          const ae::Tensor conv = ae::ops::conv2d_forward(p, x, w);
          (void)ae::ops::add_relu(ae::ops::batchnorm_forward_train(bn, conv, gamma, beta, rm, rv).y, r);
        }
        for (const KernelProfile& k : ae::emu::profile_results()) totals[fused] += static_cast<double>(k.global_sector_bytes());
        std::printf("\n### %s, tf32, %s\n\n%s", l.name, fused == 1 ? "conv2d_batchnorm_train" : "layer by layer",
                    ae::emu::profile_table().c_str());
      }
    }
    const double y_bytes = static_cast<double>(ae::shape_numel(l.y_shape())) * 4.0;
    std::printf("\n%s: global sector bytes, layers %.3f MB, fused %.3f MB (the output is %.3f MB)\n", l.name,
                totals[0] / 1e6, totals[1] / 1e6, y_bytes / 1e6);
    CHECK(totals[1] < totals[0]);
  }
  ae::cuda::set_conv_math(saved);
}

// Not run by ctest either: the bf16 conv forward reading f32 x and w (operands rounded as they
// are staged) against reading bf16 x and w (bf16 storage: 8 per 16-byte copy, ldmatrix fragments),
// for bench/RESULTS.md. Same outputs bit for bit (tests/gpu/test_cuda_conv_bf16_storage.cpp).
//   tests/gpu_test_emu_profile --no-skip -tc='*bf16 storage*'
TEST_CASE("profile of the bf16 conv forward: f32 storage against bf16 storage (manual: --no-skip)" * doctest::skip()) {
  AE_GPU_TEST_PRELUDE();
  const ae::cuda::ScopedConvMath bf16(ae::cuda::ConvMath::bf16);
  const ae::cuda::ScopedConvForwardSplitK unsplit(1);  // as at training batch sizes
  for (const ProfiledLayer& l : kProfiledLayers) {
    const ae::ops::Conv2dParams p = l.params();
    const LayerOperands t = operands_of(l);
    const ae::Tensor &x = t.x, &w = t.w;
    const ae::Tensor xb = ae::ops::cast(x, ae::DType::bf16), wb = ae::ops::cast(w, ae::DType::bf16);
    double bytes[2] = {0, 0}, conflicts[2] = {0, 0};
    for (int storage = 0; storage < 2; ++storage) {
      Profiling on;
      (void)ae::ops::conv2d_forward(p, storage == 1 ? xb : x, storage == 1 ? wb : w);
      for (const KernelProfile& k : ae::emu::profile_results()) {
        bytes[storage] += static_cast<double>(k.global_sector_bytes());
        conflicts[storage] += static_cast<double>(k.shared_load.conflicts() + k.shared_store.conflicts());
      }
      std::printf("\n### %s, bf16 math, %s storage\n\n%s", l.name, storage == 1 ? "bf16" : "f32",
                  ae::emu::profile_table().c_str());
    }
    std::printf("\n%s: global sector bytes f32 storage %.3f MB, bf16 storage %.3f MB; shared conflicts %.0f, %.0f\n",
                l.name, bytes[0] / 1e6, bytes[1] / 1e6, conflicts[0], conflicts[1]);
    CHECK(bytes[1] < bytes[0]);
  }
}

// Not run by ctest either: the C = 3 stem's forward and backward-weight with 4-byte copies (a
// forced pipelined kernel) against the stem path (automatic: x and w padded to 4 channels, 16-byte
// copies; conv_backward.h), for bench/RESULTS.md. Batch 2 at 112x112. The padded rows include the
// padding pass and the dropping of dw's fourth channel.
//   tests/gpu_test_emu_profile --no-skip -tc='*stem*'
TEST_CASE("profile of the stem: 4-byte copies against x padded to 4 channels (manual: --no-skip)" * doctest::skip()) {
  AE_GPU_TEST_PRELUDE();
  const ProfiledLayer stem{"stem 7x7/2 3->64 @112, batch 2", 2, 112, 3, 64, 7, 2, 3};
  const LayerOperands t = operands_of(stem);
  for (const ae::cuda::ConvMath math : {ae::cuda::ConvMath::tf32, ae::cuda::ConvMath::bf16}) {
    const ae::cuda::ScopedConvMath mode(math);
    double loads[2] = {0, 0}, bytes[2] = {0, 0}, estimate[2] = {0, 0};
    for (int padded = 0; padded < 2; ++padded) {
      Profiling on;
      run_stem_passes(stem, t, padded == 1);
      for (const KernelProfile& k : ae::emu::profile_results()) {
        loads[padded] += static_cast<double>(k.global_load.accesses);
        bytes[padded] += static_cast<double>(k.global_sector_bytes());
        estimate[padded] += ae::emu::roofline_h200(k).estimate_s;
      }
      std::printf("\n### %s, %s, %s\n\n%s", stem.name, ae::cuda::conv_math_name(math),
                  padded ? "padded to 4 channels" : "4-byte copies", ae::emu::profile_table().c_str());
    }
    std::printf("\n%s %s: warp-level global loads %.0f -> %.0f, sector MB %.3f -> %.3f, ESTIMATE us %.2f -> %.2f\n",
                stem.name, ae::cuda::conv_math_name(math), loads[0], loads[1], bytes[0] / 1e6, bytes[1] / 1e6,
                estimate[0] * 1e6, estimate[1] * 1e6);
    CHECK(loads[1] < loads[0]);
  }
}

// Not run by ctest either: the three pipelined convolution kernels forced to 128x128 block tiles
// (forward, backward-data, backward-weight; tf32 and bf16, unsplit forward), for bench/RESULTS.md's
// comparison of warp tilings: what a warp reads from shared memory per FLOP falls with a larger warp
// tile (fragment reads per mma k-step: (tiles_m + tiles_n / 2) ldmatrix.x4 for tiles_m x tiles_n mma).
//   tests/gpu_test_emu_profile --no-skip -tc='*128x128 tiles*'
TEST_CASE("profile of the 128x128 tiles: shared-memory reads per FLOP (manual: --no-skip)" * doctest::skip()) {
  AE_GPU_TEST_PRELUDE();
  const ProfiledLayer layers[] = {{"layer2 3x3 128->128 @14, batch 8", 8, 14, 128, 128, 3, 1, 1},
                                  {"layer3 3x3 256->256 @7, batch 8", 8, 7, 256, 256, 3, 1, 1}};
  const ae::cuda::ScopedConvForwardSplitK unsplit(1);
  for (const ProfiledLayer& l : layers) {
    const LayerOperands t = operands_of(l);
    for (const ae::cuda::ConvMath math : {ae::cuda::ConvMath::tf32, ae::cuda::ConvMath::bf16}) {
      const ae::cuda::ScopedConvMath mode(math);
      Profiling on;
      run_forced_pipelined_passes(l, t, /*large=*/true);
      double flops = 0, wavefronts = 0, conflicts = 0, estimate = 0;
      for (const KernelProfile& k : ae::emu::profile_results()) {
        flops += k.flops();
        wavefronts += static_cast<double>(k.shared_load.wavefronts);
        conflicts += static_cast<double>(k.shared_load.conflicts() + k.shared_store.conflicts());
        estimate += ae::emu::roofline_h200(k).estimate_s;
      }
      std::printf("\n### %s, %s, 128x128 tiles\n\n%s", l.name, ae::cuda::conv_math_name(math),
                  ae::emu::profile_table().c_str());
      std::printf("\n%s %s: shared-load wavefronts %.0f (%.1f FLOP per wavefront), shared conflicts %.0f, ESTIMATE us %.2f\n",
                  l.name, ae::cuda::conv_math_name(math), wavefronts, flops / wavefronts, conflicts, estimate * 1e6);
      CHECK(wavefronts > 0);
    }
  }
}

#else

TEST_CASE("emulated-device profile (emulated device only)") {
  ae::test::skip_binary("the profile counts the emulated device's accesses; this binary runs on a real GPU");
}

#endif
