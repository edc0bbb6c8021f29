// Pinned staging buffers for host-to-device uploads (see host_staging.h).
#include "kernels/cuda/host_staging.h"

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/stream.h"
#include "runtime/error.h"

namespace ae::cuda {
namespace {

constexpr std::size_t kDefaultChunk = std::size_t{4} << 20;

// The three primitives the uploader needs, for both devices.
#if defined(AE_EMULATED_DEVICE)
void* pinned_alloc(std::size_t bytes) { return std::aligned_alloc(256, (bytes + 255) / 256 * 256); }
void pinned_free(void* p) { std::free(p); }
void copy_to_device_async(void* dst, const void* src, std::size_t bytes, Stream) { std::memcpy(dst, src, bytes); }
#else
void* pinned_alloc(std::size_t bytes) {
  void* p = nullptr;
  AE_CUDA_CHECK(cudaHostAlloc(&p, bytes, cudaHostAllocDefault));
  return p;
}
void pinned_free(void* p) { (void)cudaFreeHost(p); }
void copy_to_device_async(void* dst, const void* src, std::size_t bytes, Stream stream) {
  AE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
}
#endif

class Uploader {
 public:
  void upload(void* dst, const void* src, std::size_t bytes) {
    if (bytes == 0) return;
    std::lock_guard<std::mutex> lock(mutex_);
    ensure_buffers();
    const Stream stream = backend_stream();
    char* out = static_cast<char*>(dst);
    const char* in = static_cast<const char*>(src);
    for (std::size_t done = 0; done < bytes;) {
      const std::size_t n = bytes - done < chunk_ ? bytes - done : chunk_;
      Slot& slot = slots_[next_];
      next_ ^= 1;
      slot.in_flight.wait();  // the DMA engine may still be reading this buffer's last chunk
      std::memcpy(slot.buffer, in + done, n);
      copy_to_device_async(out + done, slot.buffer, n, stream);
      slot.in_flight.record(stream);
      done += n;
      ++stats_.chunks;
    }
    ++stats_.uploads;
    stats_.bytes += bytes;
  }

  StagingStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

  void set_chunk(std::size_t bytes) {
    AE_CHECK(bytes > 0, "set_staging_chunk_bytes: the chunk size must be positive");
    std::lock_guard<std::mutex> lock(mutex_);
    if (bytes == chunk_) return;
    release_buffers();
    chunk_ = bytes;
  }
  std::size_t chunk() {
    std::lock_guard<std::mutex> lock(mutex_);
    return chunk_;
  }

 private:
  struct Slot {
    void* buffer = nullptr;
    StreamEvent in_flight;
  };

  void ensure_buffers() {
    for (Slot& s : slots_) {
      if (s.buffer) continue;
      s.buffer = pinned_alloc(chunk_);
      ++stats_.buffer_allocations;
      stats_.buffer_bytes += chunk_;
    }
  }
  void release_buffers() {
    for (Slot& s : slots_) {
      if (!s.buffer) continue;
      s.in_flight.wait();
      pinned_free(s.buffer);
      s.buffer = nullptr;
      stats_.buffer_bytes -= chunk_;
    }
  }

  std::mutex mutex_;
  Slot slots_[2];
  int next_ = 0;
  std::size_t chunk_ = kDefaultChunk;
  StagingStats stats_;
};

Uploader& uploader() {
  static Uploader* u = new Uploader();  // never destroyed: uploads may happen during exit
  return *u;
}

}  // namespace

void staged_upload(void* dst, const void* src, std::size_t bytes) { uploader().upload(dst, src, bytes); }
StagingStats staging_stats() { return uploader().stats(); }
void set_staging_chunk_bytes(std::size_t bytes) { uploader().set_chunk(bytes); }
std::size_t staging_chunk_bytes() { return uploader().chunk(); }

}  // namespace ae::cuda
