#pragma once
// The one way to launch a kernel (no <<<>>> at call sites, DESIGN.md): checks the configuration,
// launches on the real GPU or runs on the emulated device, and checks the launch status with the
// call site's file, line and kernel name. A grid with zero blocks (an empty tensor) does nothing.
//   AE_LAUNCH(add_kernel, dim3(blocks), dim3(256), 0, stream, a, b, y, n);
// While the calling thread captures a CUDA graph (graph.h), the launch is recorded instead: on a
// GPU it goes to the capture stream (a `nullptr` stream means the current one), on the emulated
// device the kernel and a copy of its arguments become a node that replay() runs.
#include <cstddef>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>

#include "kernels/cuda/device.h"
#include "kernels/cuda/graph.h"

namespace ae::cuda {

struct LaunchSite {
  const char* kernel;
  const char* file;
  int line;
};

// Throws ae::Error for an impossible configuration; returns false when there is nothing to run.
bool check_launch(const LaunchSite& site, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                  unsigned bz, std::size_t shared_bytes);
#if !defined(AE_EMULATED_DEVICE)
// cudaGetLastError after the launch, and a full synchronisation when AE_CUDA_SYNC=1 (or the
// build option AE_CUDA_DEBUG_SYNC) so an asynchronous fault is blamed on the right kernel.
void check_after_launch(const LaunchSite& site);
void allow_large_dynamic_shared(const LaunchSite& site, const void* kernel, std::size_t shared_bytes);
#endif

// Blocks for a grid-stride loop over n elements: enough to fill a large GPU, never more than
// the work needs.
inline unsigned blocks_for(int64_t n, int threads_per_block, unsigned max_blocks = 4096) {
  const int64_t b = (n + threads_per_block - 1) / threads_per_block;
  return static_cast<unsigned>(b < static_cast<int64_t>(max_blocks) ? b : max_blocks);
}

template <typename... Params, typename... Args>
void launch(const LaunchSite& site, void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes,
            Stream stream, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "AE_LAUNCH: argument count differs from the kernel's");
  if (!check_launch(site, grid.x, grid.y, grid.z, block.x, block.y, block.z, shared_bytes)) return;
#if defined(AE_EMULATED_DEVICE)
  (void)stream;  // the emulated device runs every launch synchronously, in order
  const std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  if (capturing()) {  // the arguments are frozen by value, as a real capture freezes them
    record_node(site.kernel, [params, kernel, name = site.kernel, grid, block, shared_bytes] {
      ::ae::emu::run_kernel(name, grid, block, shared_bytes, [&params, kernel] { std::apply(kernel, params); });
    });
    return;
  }
  ::ae::emu::run_kernel(site.kernel, grid, block, shared_bytes, [&params, kernel] { std::apply(kernel, params); });
#else
  if (shared_bytes > 48 * 1024) allow_large_dynamic_shared(site, reinterpret_cast<const void*>(kernel), shared_bytes);
  kernel<<<grid, block, shared_bytes, launch_stream(site.kernel, stream)>>>(
      static_cast<Params>(std::forward<Args>(args))...);
  check_after_launch(site);
#endif
}

}  // namespace ae::cuda

#define AE_LAUNCH(kernel, grid, block, shared_bytes, stream, ...) \
  ::ae::cuda::launch(::ae::cuda::LaunchSite{#kernel, __FILE__, __LINE__}, kernel, grid, block, shared_bytes, stream, __VA_ARGS__)
