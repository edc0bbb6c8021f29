#pragma once
// Profile mode of the emulated device: "measure without a GPU" (DESIGN.md, "Profiling the GPU path
// without a GPU"; how to build and read it: docs/emulated_profile.md).
//
// In a build whose kernel sources are instrumented (-DAE_EMU_PROFILE=ON; the test kernels of
// tests/gpu/test_emu_profile.cpp always are), g++ calls a callback before every memory access of
// that code (-fsanitize=kernel-address with call-only instrumentation, no runtime library). With
// AE_EMU_PROFILE=1 in the environment, or set_profiling(true), the callbacks of kernels/emu/
// profile.cpp record each emulated thread's accesses to device (global) and shared memory, group
// the lanes of a warp into warp-level accesses, and sum per kernel (the name its launch gives):
//   - global memory: 32-byte sectors per warp-level access against the ideal for the bytes the
//     active lanes touch (coalescing efficiency = ideal / actual), bytes requested and as sectors;
//   - shared memory: wavefronts and bank conflicts per warp-level access (model below);
//   - FLOPs as the launch site declares them (profile_note_flops: memory instrumentation cannot
//     count arithmetic), and from all of it a roofline ESTIMATE of the time on an H200.
// The counts are exact for what the emulated threads did; the time is an estimate, never a
// measurement. The report goes to stderr at exit (and to AE_EMU_PROFILE_OUT as CSV when set).
//
// Shared-memory model (32 banks of 4 bytes): a warp-level access is split into phases the way the
// hardware does for wide accesses: one phase of 32 lanes for accesses up to 4 bytes, two half-warp
// phases for 8-byte accesses, four quarter-warp phases for 16-byte accesses. A phase needs as many
// wavefronts as the largest number of distinct 4-byte words that map to one bank (lanes reading
// the same word are served by one broadcast). Conflicts = wavefronts - phases that have active
// lanes, so a conflict-free float4 access has 4 wavefronts and 0 conflicts.
//
// Global-memory model: the sectors a warp-level access needs are the distinct 32-byte segments
// covering the bytes of its active lanes; the ideal is ceil(distinct bytes / 32). There is no
// cache model: every warp-level access's sectors count as traffic, so for kernels that re-read
// data (GEMM tiles) the bytes and the memory time are upper bounds of DRAM traffic.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace ae::emu {

// Declares that the launches named `kernel` (the name their launch gives: AE_LAUNCH's kernel
// expression, or a LaunchSite's name) perform `flops` floating-point operations in total, in
// `math` ("f32" on CUDA cores, "tf32" or "bf16" on tensor cores); the roofline estimate divides by
// that precision's peak. Call it next to the launch, once per launch. A no-op unless profiling,
// and always a no-op in the real-GPU build, so a launch site needs no #if:
//   ae::emu::profile_note_flops("conv2d_forward (implicit GEMM)", 2.0 * m * n * k, "tf32");
//
// profile_next_launch_flops(flops, math) declares the FLOPs of the next kernel launched on this
// thread, whatever its name: for a launch site that dispatches to one of several kernels. Call it
// right before the launch; the launch takes it (a launch with an empty grid does not, so declare
// 0 FLOPs for empty work, which the usual 2*M*N*K does by itself).
#if defined(AE_EMULATED_DEVICE)
void profile_note_flops(const char* kernel, double flops, const char* math);
void profile_next_launch_flops(double flops, const char* math);
#else
inline void profile_note_flops(const char*, double, const char*) {}
inline void profile_next_launch_flops(double, const char*) {}
#endif

#if defined(AE_EMULATED_DEVICE)

// Warp-level accesses to global memory, loads or stores, summed over launches.
struct GlobalTraffic {
  uint64_t accesses = 0;         // warp-level accesses
  uint64_t requested_bytes = 0;  // sum over lanes of the bytes each lane asked for
  uint64_t sectors = 0;          // 32-byte sectors the accesses needed
  uint64_t ideal_sectors = 0;    // ceil(distinct bytes / 32) per access, summed
  double efficiency() const { return sectors ? static_cast<double>(ideal_sectors) / static_cast<double>(sectors) : 1.0; }
};

// Warp-level accesses to shared memory, loads or stores, summed over launches.
struct SharedTraffic {
  uint64_t accesses = 0;
  uint64_t requested_bytes = 0;
  uint64_t wavefronts = 0;
  uint64_t ideal_wavefronts = 0;  // phases with active lanes (1 per access up to 4 bytes, 2 for 8, 4 for 16)
  uint64_t conflicts() const { return wavefronts - ideal_wavefronts; }
};

struct KernelProfile {
  std::string kernel;
  uint64_t launches = 0;
  uint64_t blocks = 0;
  uint64_t threads = 0;
  GlobalTraffic global_load, global_store;
  SharedTraffic shared_load, shared_store;
  double flops_f32 = 0, flops_tf32 = 0, flops_bf16 = 0;  // as declared by profile_note_flops
  // Times a thread was switched out early to keep the pending per-lane records bounded (any point
  // between barriers is a legal switch point; non-zero only for very long barrier-free stretches).
  uint64_t preemptions = 0;

  double flops() const { return flops_f32 + flops_tf32 + flops_bf16; }
  uint64_t global_sector_bytes() const { return 32 * (global_load.sectors + global_store.sectors); }
  uint64_t global_requested_bytes() const { return global_load.requested_bytes + global_store.requested_bytes; }
};

// H200 SXM peaks (dense) used by the estimate.
constexpr double kH200Fp32FlopsPerS = 67e12;
constexpr double kH200Tf32FlopsPerS = 495e12;
constexpr double kH200Bf16FlopsPerS = 989e12;
constexpr double kH200HbmBytesPerS = 4.8e12;

// Roofline ESTIMATE of a kernel's time on an H200, summed over its launches:
//   compute_s = flops_f32 / 67e12 + flops_tf32 / 495e12 + flops_bf16 / 989e12
//   memory_s  = global sector bytes (loads + stores) / 4.8e12
//   estimate_s = max(compute_s, memory_s); intensity = flops / sector bytes.
// It assumes peak throughput, perfect overlap and no cache reuse, so it is a rough lower bound on
// compute and an upper bound on DRAM traffic: an estimate, not a timing.
struct RooflineEstimate {
  double flops = 0, bytes = 0, intensity = 0;
  double compute_s = 0, memory_s = 0, estimate_s = 0;
  bool memory_bound = false;
};
RooflineEstimate roofline_h200(const KernelProfile& k);

// For emulation code that is not instrumented but makes a memory access on a kernel thread's
// behalf (the cp.async emulation of kernels/emu/async_copy.cpp copies global to shared memory):
// counts the access as if the kernel had made it at instruction `site` (pass the caller's
// __builtin_return_address(0), and a different site for each access of one call). A no-op unless a
// profiled kernel is running on this thread. For cp.async:
//   profile_access(src, src_bytes, false, site); profile_access(dst, bytes, true, (const char*)site + 1);
void profile_access(const void* addr, std::size_t bytes, bool store, const void* site);

namespace profile_detail {
// -1: not yet read from AE_EMU_PROFILE; 0 off; 1 on (profiling(), set_profiling()).
inline std::atomic<int> g_mode{-1};
void load_reported_slow(void* to, const void* from, std::size_t bytes);
void store_reported_slow(void* to, const void* from, std::size_t bytes);
}  // namespace profile_detail

// An emulation helper's copy that stands for one access of the GPU (ldmatrix's reads, the 8-byte
// pairs and fragment words of the pipelined convolutions): copies `bytes` from `from` to `to` and,
// when profiling may be on, reports the load of `from` (load_reported) or the store to `to`
// (store_reported) as one access at the call site. The reporting copy lives in kernels/emu, which
// is never instrumented, so the access is counted once in every build: where the kernels are
// instrumented (-DAE_EMU_PROFILE=ON) and where they are not (the default build, where a test can
// then count a conv kernel's fragment reads). Profiling off, it is an inline memcpy (the out-of-line
// call every time cost the emulated bf16 training test a fifth of its time).
inline void load_reported(void* to, const void* from, std::size_t bytes) {
  if (profile_detail::g_mode.load(std::memory_order_relaxed) != 0) {
    profile_detail::load_reported_slow(to, from, bytes);
  } else {
    std::memcpy(to, from, bytes);
  }
}
inline void store_reported(void* to, const void* from, std::size_t bytes) {
  if (profile_detail::g_mode.load(std::memory_order_relaxed) != 0) {
    profile_detail::store_reported_slow(to, from, bytes);
  } else {
    std::memcpy(to, from, bytes);
  }
}

// Whether launches are being profiled: AE_EMU_PROFILE=1 in the environment until set_profiling().
bool profiling();
void set_profiling(bool on);
// Memory bound: warp-level accesses a block may hold pending (waiting for the warp's other lanes)
// before a lane that loads is switched out so the others catch up; default 32768 (about 17 MB).
void set_profile_max_pending(std::size_t accesses);
std::size_t profile_max_pending();
// Profiles so far, sorted by kernel name; profile_reset() forgets them.
std::vector<KernelProfile> profile_results();
void profile_reset();
// The report: a markdown table with the measured counts and the labelled roofline estimate.
std::string profile_table();
// The same numbers as CSV, one row per kernel (AE_EMU_PROFILE_OUT=path writes it at exit).
void write_profile_csv(const std::string& path);

#endif  // AE_EMULATED_DEVICE

}  // namespace ae::emu
