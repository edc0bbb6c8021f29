#include "runtime/alloc.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/error.h"

#if defined(__SANITIZE_ADDRESS__)
#define AE_HOST_CACHE_SUPPORTED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AE_HOST_CACHE_SUPPORTED 0
#endif
#endif
#ifndef AE_HOST_CACHE_SUPPORTED
#define AE_HOST_CACHE_SUPPORTED 1
#endif

namespace ae {

namespace {

// Every block starts with one alignment unit holding its size, so host_free needs no size and
// the payload keeps its 64-byte alignment.
struct BlockHeader {
  std::size_t block_bytes;  // payload bytes the block can hold (its size class)
  uint64_t magic;
};
static_assert(sizeof(BlockHeader) <= kHostAlignment);
constexpr uint64_t kMagic = 0xae5417e0b10c4ea1ull;

// Below this, glibc's own free lists reuse memory without new page faults; above it (its default
// mmap threshold) each block is a fresh mapping, which is what the cache is for.
constexpr std::size_t kCacheMin = std::size_t{128} << 10;

// Eight classes per power of two: a block is at most 12.5% larger than asked for. The unused
// tail is never touched, so it costs address space, not resident memory.
std::size_t size_class(std::size_t bytes) {
  if (bytes < kCacheMin) return (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
  const int top = 63 - __builtin_clzll(bytes);
  const std::size_t step = std::size_t{1} << (top - 3);
  return (bytes + step - 1) / step * step;
}

std::size_t default_limit() {
  if (const char* env = std::getenv("AE_HOST_CACHE_MB"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    const unsigned long long mb = std::strtoull(env, &end, 10);
    if (end != env && *end == '\0' && mb < (1ull << 40)) return static_cast<std::size_t>(mb) << 20;
    std::fprintf(stderr, "aesthete: ignoring AE_HOST_CACHE_MB='%s' (expected a whole number of MiB)\n", env);
  }
  std::size_t limit = std::size_t{1} << 30;
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) limit = std::min(limit, static_cast<std::size_t>(pages) * static_cast<std::size_t>(page) / 4);
  return limit;
}

class HostCache {
 public:
  HostCache() : limit_(AE_HOST_CACHE_SUPPORTED ? default_limit() : 0) {}

  void* alloc(std::size_t bytes) {
    AE_CHECK(bytes <= (std::size_t{1} << 62), "out of host memory allocating " << bytes << " bytes");
    const std::size_t cls = size_class(std::max<std::size_t>(bytes, 1));
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.allocations;
      auto it = free_.find(cls);
      if (it != free_.end() && !it->second.empty()) {
        void* base = it->second.back();
        it->second.pop_back();
        stats_.cached_bytes -= cls + kHostAlignment;
        ++stats_.cache_hits;
        add_live(cls);
        return static_cast<char*>(base) + kHostAlignment;
      }
    }
    void* base = std::aligned_alloc(kHostAlignment, cls + kHostAlignment);
    if (base == nullptr) {  // the cache may hold what the system now lacks
      release_all();
      base = std::aligned_alloc(kHostAlignment, cls + kHostAlignment);
    }
    AE_CHECK(base != nullptr, "out of host memory allocating " << bytes << " bytes");
    *static_cast<BlockHeader*>(base) = {cls, kMagic};
    std::lock_guard<std::mutex> lock(mu_);
    add_live(cls);
    return static_cast<char*>(base) + kHostAlignment;
  }

  void free(void* ptr) noexcept {
    if (ptr == nullptr) return;
    void* base = static_cast<char*>(ptr) - kHostAlignment;
    const BlockHeader h = *static_cast<BlockHeader*>(base);
    if (h.magic != kMagic) {
      std::fprintf(stderr, "aesthete: internal error: host_free of %p, which host_alloc did not return\n", ptr);
      std::abort();
    }
    const std::size_t total = h.block_bytes + kHostAlignment;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.live_bytes -= total;
      if (h.block_bytes >= kCacheMin && stats_.cached_bytes + total <= limit_) {
        try {
          free_[h.block_bytes].push_back(base);
          stats_.cached_bytes += total;
          return;
        } catch (...) {  // no memory for the list itself: give the block back instead
        }
      }
    }
    std::free(base);
  }

  void set_limit(std::size_t bytes) {
    std::vector<void*> drop;
    {
      std::lock_guard<std::mutex> lock(mu_);
      limit_ = AE_HOST_CACHE_SUPPORTED ? bytes : 0;
      // Largest classes first: the fewest blocks to release for the bytes regained.
      std::vector<std::size_t> classes;
      for (const auto& [cls, blocks] : free_)
        if (!blocks.empty()) classes.push_back(cls);
      std::sort(classes.rbegin(), classes.rend());
      for (std::size_t cls : classes) {
        auto& blocks = free_[cls];
        while (stats_.cached_bytes > limit_ && !blocks.empty()) {
          drop.push_back(blocks.back());
          blocks.pop_back();
          stats_.cached_bytes -= cls + kHostAlignment;
        }
      }
    }
    for (void* p : drop) std::free(p);
  }

  void release_all() {
    std::unordered_map<std::size_t, std::vector<void*>> drop;
    {
      std::lock_guard<std::mutex> lock(mu_);
      drop.swap(free_);
      stats_.cached_bytes = 0;
    }
    for (auto& [cls, blocks] : drop)
      for (void* p : blocks) std::free(p);
  }

  HostMemoryStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    HostMemoryStats s = stats_;
    s.cache_limit = limit_;
    return s;
  }

  void reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_live_bytes = stats_.live_bytes;
  }

 private:
  void add_live(std::size_t cls) {
    stats_.live_bytes += cls + kHostAlignment;
    stats_.peak_live_bytes = std::max(stats_.peak_live_bytes, stats_.live_bytes);
  }

  std::mutex mu_;
  std::unordered_map<std::size_t, std::vector<void*>> free_;  // size class -> cached blocks
  HostMemoryStats stats_;
  std::size_t limit_;
};

// Never destroyed: tensors held by other static objects are freed during exit, after a static
// cache would already be gone. The system reclaims the cached blocks at exit.
HostCache& cache() {
  static HostCache* c = new HostCache();
  return *c;
}

}  // namespace

void* host_alloc(std::size_t bytes) { return cache().alloc(bytes); }
void host_free(void* ptr) noexcept { cache().free(ptr); }
HostMemoryStats host_memory_stats() { return cache().stats(); }
void reset_host_peak() { cache().reset_peak(); }
void set_host_cache_limit(std::size_t bytes) { cache().set_limit(bytes); }
void release_host_cache() { cache().release_all(); }
bool host_cache_supported() { return AE_HOST_CACHE_SUPPORTED != 0; }

namespace {
std::unique_ptr<DeviceAllocator>& registered() {
  static std::unique_ptr<DeviceAllocator> a;
  return a;
}
}  // namespace

void register_device_allocator(DeviceAllocator allocator) {
  registered() = std::make_unique<DeviceAllocator>(std::move(allocator));
}

const DeviceAllocator* device_allocator() { return registered().get(); }

}  // namespace ae
