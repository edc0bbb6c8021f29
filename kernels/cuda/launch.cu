// Launch-configuration checks shared by the real and the emulated device (see launch.h).
#include "kernels/cuda/launch.h"

#include <cstdlib>

#include "kernels/cuda/cuda_check.h"
#include "runtime/error.h"

namespace ae::cuda {

bool check_launch(const LaunchSite& site, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                  unsigned bz, std::size_t shared_bytes) {
  const unsigned long long threads = 1ull * bx * by * bz;
  AE_CHECK(threads >= 1 && threads <= 1024 && bz <= 64,
           site.file << ":" << site.line << ": kernel " << site.kernel << " launched with block (" << bx << "," << by
                     << "," << bz << "); a block has 1..1024 threads and z <= 64");
  AE_CHECK(gy <= 65535 && gz <= 65535 && gx <= 2147483647u,
           site.file << ":" << site.line << ": kernel " << site.kernel << " launched with grid (" << gx << "," << gy
                     << "," << gz << "); y and z are at most 65535");
  AE_CHECK(shared_bytes <= 163 * 1024, site.file << ":" << site.line << ": kernel " << site.kernel << " asks for "
                                                 << shared_bytes << " bytes of dynamic shared memory (limit 163 KiB "
                                                 << "on sm_80)");
  return gx > 0 && gy > 0 && gz > 0;
}

#if !defined(AE_EMULATED_DEVICE)
namespace {
bool sync_every_launch() {
#if defined(AE_CUDA_DEBUG_SYNC)
  return true;
#else
  static const bool on = [] {
    const char* v = std::getenv("AE_CUDA_SYNC");
    return v && v[0] == '1';
  }();
  return on;
#endif
}
}  // namespace

void check_after_launch(const LaunchSite& site) {
  cudaError_t status = cudaGetLastError();
  // (no synchronisation inside a graph capture: nothing has run, and it would invalidate the capture)
  if (status == cudaSuccess && sync_every_launch() && !capturing()) status = cudaDeviceSynchronize();
  AE_CHECK(status == cudaSuccess, site.file << ":" << site.line << ": kernel " << site.kernel << " failed: "
                                            << cudaGetErrorName(status) << " (" << cudaGetErrorString(status) << ")");
}

void allow_large_dynamic_shared(const LaunchSite& site, const void* kernel, std::size_t shared_bytes) {
  const cudaError_t status =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared_bytes));
  AE_CHECK(status == cudaSuccess, site.file << ":" << site.line << ": kernel " << site.kernel << " cannot use "
                                            << shared_bytes << " bytes of dynamic shared memory: "
                                            << cudaGetErrorString(status));
}
#endif

}  // namespace ae::cuda
