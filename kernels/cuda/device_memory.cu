// Caching device allocator with optional red zones (see device_memory.h).
#include "kernels/cuda/device_memory.h"

#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/cuda/raw_memory.h"
#include "runtime/error.h"

namespace ae::cuda {
namespace {

constexpr std::size_t kRedZone = 256;
constexpr unsigned char kRedZoneByte = 0xA5;
constexpr unsigned char kPoisonByte = 0xFF;

// Blocks are cached by rounded size: 512-byte steps up to 1 MiB, 1 MiB steps above.
std::size_t round_block(std::size_t bytes) {
  const std::size_t step = bytes <= (1u << 20) ? 512 : (1u << 20);
  return (bytes + step - 1) / step * step;
}

struct Live {
  void* block;             // start of the raw block
  std::size_t block_size;  // rounded size of the raw block
  std::size_t bytes;       // what the caller asked for
  bool guarded;
};

class Allocator {
 public:
  void* alloc(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    const std::size_t want = guards_ ? bytes + 2 * kRedZone : bytes;
    const std::size_t size = round_block(want == 0 ? 1 : want);
    void* block = take_cached(size);
    if (block) {
      ++stats_.cache_hits;
    } else {
      ++stats_.cache_misses;
      block = raw_alloc(size);
    }
    if (!block) {
      release_cached_locked();
      block = raw_alloc(size);
    }
    AE_CHECK(block != nullptr, "out of device memory allocating " << bytes << " bytes (" << stats_.in_use
                                                                  << " bytes in use)");
    char* payload = static_cast<char*>(block);
    if (guards_) {
      raw_fill(block, kRedZoneByte, size);
      payload += kRedZone;
      raw_fill(payload, kPoisonByte, bytes);
    }
    live_[payload] = Live{block, size, bytes, guards_};
    stats_.in_use += size;
    if (stats_.in_use > stats_.peak) stats_.peak = stats_.in_use;
    return payload;
  }

  void free(void* p) noexcept {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = live_.find(p);
    if (it == live_.end()) return;
    const Live l = it->second;
    live_.erase(it);
    if (l.guarded) {
      try {
        const std::string bad = inspect(p, l);
        if (!bad.empty()) corrupted_.push_back(bad + " (found when it was freed)");
      } catch (...) {
        corrupted_.push_back("red zones of a freed block could not be read back");
      }
    }
    stats_.in_use -= l.block_size;
    stats_.cached += l.block_size;
    cache_.emplace(l.block_size, l.block);
  }

  void check() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::string> bad = std::move(corrupted_);
    corrupted_.clear();
    for (const auto& [p, l] : live_) {
      if (!l.guarded) continue;
      const std::string b = inspect(p, l);
      if (!b.empty()) bad.push_back(b);
    }
    if (bad.empty()) return;
    std::ostringstream os;
    os << bad.size() << " device allocation(s) written out of bounds:";
    for (std::size_t i = 0; i < bad.size() && i < 10; ++i) os << "\n  " << bad[i];
    AE_FAIL(os.str());
  }

  void set_guards(bool on) {
    std::lock_guard<std::mutex> lock(mutex_);
    guards_ = on;
  }
  bool guards() {
    std::lock_guard<std::mutex> lock(mutex_);
    return guards_;
  }
  MemoryStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.peak = stats_.in_use;
  }
  void release_cached() {
    std::lock_guard<std::mutex> lock(mutex_);
    release_cached_locked();
  }

 private:
  void* take_cached(std::size_t size) {
    const auto it = cache_.find(size);
    if (it == cache_.end()) return nullptr;
    void* block = it->second;
    cache_.erase(it);
    stats_.cached -= size;
    return block;
  }
  void release_cached_locked() {
    for (const auto& [size, block] : cache_) raw_free(block);
    cache_.clear();
    stats_.cached = 0;
  }
  // Empty when both red zones are intact, else a description of the first bad byte.
  static std::string inspect(const void* payload, const Live& l) {
    const char* start = static_cast<const char*>(l.block);
    const std::size_t tail = l.block_size - kRedZone - l.bytes;
    std::vector<unsigned char> front(kRedZone), back(tail);
    raw_copy(front.data(), start, kRedZone);
    raw_copy(back.data(), static_cast<const char*>(payload) + l.bytes, tail);
    std::ostringstream os;
    for (std::size_t i = 0; i < kRedZone; ++i) {
      if (front[i] != kRedZoneByte) {
        os << "allocation of " << l.bytes << " bytes: byte " << static_cast<long>(i) - static_cast<long>(kRedZone)
           << " (before the start) was overwritten";
        return os.str();
      }
    }
    for (std::size_t i = 0; i < tail; ++i) {
      if (back[i] != kRedZoneByte) {
        os << "allocation of " << l.bytes << " bytes: byte " << l.bytes + i << " (past the end) was overwritten";
        return os.str();
      }
    }
    return {};
  }

  std::mutex mutex_;
  bool guards_ = false;
  std::unordered_map<void*, Live> live_;
  std::multimap<std::size_t, void*> cache_;
  std::vector<std::string> corrupted_;
  MemoryStats stats_;
};

Allocator& allocator() {
  static Allocator* a = new Allocator();  // never destroyed: tensors may be freed during exit
  return *a;
}

}  // namespace

void* device_alloc(std::size_t bytes) { return allocator().alloc(bytes); }
void device_free(void* p) noexcept { allocator().free(p); }
void device_copy(void* dst, const void* src, std::size_t bytes) { raw_copy(dst, src, bytes); }
void set_guard_bytes(bool on) { allocator().set_guards(on); }
bool guard_bytes_enabled() { return allocator().guards(); }
void check_guard_bytes() { allocator().check(); }
MemoryStats memory_stats() { return allocator().stats(); }
void release_cached_memory() { allocator().release_cached(); }
void reset_peak_memory() { allocator().reset_peak(); }

}  // namespace ae::cuda
