// Caching device allocator with optional red zones (see device_memory.h).
#include "kernels/cuda/device_memory.h"

#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/cuda/graph.h"
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
  uint64_t pool;    // 0: the general cache, else the graph pool the block belongs to
  uint64_t serial;  // allocation order (graph pinning compares it)
};

// A graph-private pool (graph.h "Memory").
struct Pool {
  bool alive = true;
  uint64_t pin_serial = 0;  // blocks with a smaller serial may be referenced by the graph
  std::multimap<std::size_t, void*> cache;  // free unguarded blocks by block size
  // Free guarded blocks by the payload size they were allocated for, with their block size. A replay
  // re-runs the writes of every owner a block had during the capture, so a guarded block is only
  // reused for the same payload size: a shorter later owner's red zone would otherwise be
  // overwritten, at every replay, by a longer earlier owner's legitimate writes.
  std::multimap<std::size_t, std::pair<void*, std::size_t>> exact;
  std::size_t cached = 0, live = 0;
};

// Freed general blocks held back while a graph may reference them.
struct Deferred {
  uint64_t serial;
  std::size_t size;
  void* block;
};

// The pool this thread allocates from (0: the general cache).
thread_local uint64_t t_pool = 0;

class Allocator {
 public:
  void* alloc(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    const std::size_t want = guards_ ? bytes + 2 * kRedZone : bytes;
    const std::size_t size = round_block(want == 0 ? 1 : want);
    const uint64_t pool_id = t_pool;
    Pool* pool = pool_id != 0 ? &pools_.at(pool_id) : nullptr;
    void* block = nullptr;
    if (!pool) {
      block = take_from(cache_, size, stats_.cached);
    } else if (!guards_) {
      block = take_from(pool->cache, size, pool->cached);
    } else if (const auto it = pool->exact.find(bytes); it != pool->exact.end()) {
      block = it->second.first;
      pool->cached -= size;
      pool->exact.erase(it);
    }
    if (pool && block) stats_.graph_pools -= size;
    if (block) {
      ++stats_.cache_hits;
    } else {
      ++stats_.cache_misses;
      block = raw_alloc(size);
    }
    if (!block && !pool) {  // (a graph pool never frees the general cache: cudaFree is not capturable)
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
    live_[payload] = Live{block, size, bytes, guards_, pool_id, ++serial_};
    if (pool) pool->live += size;
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
    if (l.pool != 0) {
      Pool& pool = pools_.at(l.pool);
      pool.live -= l.block_size;
      if (pool.alive) {  // only its graph's capture reuses it
        if (l.guarded) {
          pool.exact.emplace(l.bytes, std::make_pair(l.block, l.block_size));
        } else {
          pool.cache.emplace(l.block_size, l.block);
        }
        pool.cached += l.block_size;
        stats_.graph_pools += l.block_size;
        return;
      }
      if (pool.live == 0) pools_.erase(l.pool);  // a dead pool holds no free blocks
    }
    if (l.serial < pinned_below_) {  // a live graph may still read or write it
      deferred_.push_back(Deferred{l.serial, l.block_size, l.block});
      stats_.deferred += l.block_size;
      return;
    }
    stats_.cached += l.block_size;
    cache_.emplace(l.block_size, l.block);
  }

  uint64_t create_pool() {
    std::lock_guard<std::mutex> lock(mutex_);
    const uint64_t id = ++next_pool_;
    pools_.emplace(id, Pool{});
    return id;
  }
  void pin(uint64_t id) {
    std::lock_guard<std::mutex> lock(mutex_);
    Pool& pool = pools_.at(id);
    pool.pin_serial = serial_ + 1;
    if (pool.pin_serial > pinned_below_) pinned_below_ = pool.pin_serial;
  }
  void release_pool(uint64_t id) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = pools_.find(id);
    if (it == pools_.end()) return;
    Pool& pool = it->second;
    for (const auto& [size, block] : pool.cache) cache_.emplace(size, block);
    for (const auto& [bytes, entry] : pool.exact) cache_.emplace(entry.second, entry.first);
    stats_.cached += pool.cached;
    stats_.graph_pools -= pool.cached;
    pool.cache.clear();
    pool.exact.clear();
    pool.cached = 0;
    pool.alive = false;
    if (pool.live == 0) pools_.erase(it);
    pinned_below_ = 0;
    for (const auto& [pid, p] : pools_)
      if (p.alive && p.pin_serial > pinned_below_) pinned_below_ = p.pin_serial;
    std::vector<Deferred> keep;
    for (const Deferred& d : deferred_) {
      if (d.serial < pinned_below_) {
        keep.push_back(d);
      } else {
        cache_.emplace(d.size, d.block);
        stats_.cached += d.size;
        stats_.deferred -= d.size;
      }
    }
    deferred_ = std::move(keep);
  }
  std::size_t pool_bytes(uint64_t id) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = pools_.find(id);
    return it == pools_.end() ? 0 : it->second.live + it->second.cached;
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
  static void* take_from(std::multimap<std::size_t, void*>& cache, std::size_t size, std::size_t& counter) {
    const auto it = cache.find(size);
    if (it == cache.end()) return nullptr;
    void* block = it->second;
    cache.erase(it);
    counter -= size;
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
  std::unordered_map<uint64_t, Pool> pools_;
  uint64_t next_pool_ = 0;
  uint64_t serial_ = 0;
  uint64_t pinned_below_ = 0;  // the largest pin_serial of a live pool
  std::vector<Deferred> deferred_;
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
void release_cached_memory() {
  refuse_during_capture("release_cached_memory()", "freeing device memory (cudaFree) synchronises the device");
  allocator().release_cached();
}
void reset_peak_memory() { allocator().reset_peak(); }
uint64_t create_graph_pool() { return allocator().create_pool(); }
void set_thread_allocation_pool(uint64_t pool) { t_pool = pool; }
uint64_t thread_allocation_pool() { return t_pool; }
void pin_blocks_for_graph(uint64_t pool) { allocator().pin(pool); }
void release_graph_pool(uint64_t pool) { allocator().release_pool(pool); }
std::size_t graph_pool_bytes(uint64_t pool) { return allocator().pool_bytes(pool); }

}  // namespace ae::cuda
