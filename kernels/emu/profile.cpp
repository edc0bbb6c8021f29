// Profile mode of the emulated device (what is measured and the models: profile.h).
//
// How accesses arrive: instrumented code (g++ -fsanitize=kernel-address with
// asan-instrumentation-with-call-threshold=0) calls __asan_{load,store}{1,2,4,8,16,N}_noabort
// before every memory access, and no sanitizer runtime is linked, so this file provides them. A
// callback does one thread-local pointer test unless a profiled kernel is running on this thread.
//
// How lanes become warp-level accesses: between two synchronisation points the scheduler runs the
// lanes of a warp one after another, so a lane's accesses are matched with the other lanes' by
// (warp, call site, k-th time this lane reached that site since the last sync). A warp-level
// access is counted once every live lane of the warp has recorded it, or, for lanes that diverged,
// at the next full-warp or block barrier, when a lane exits, or at the end of the block.
#include "kernels/emu/profile.h"

#include <pthread.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <map>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "kernels/emu/profile_hooks.h"
#include "kernels/emu/scheduler.h"
#include "runtime/error.h"

// The executable's own image (code, constants, statics): kernel code may read constant tables
// there, which a GPU would serve from the constant cache or immediates, not from device memory.
extern "C" char __executable_start[];
extern "C" char _end[];

namespace ae::emu {
namespace {

// Pending warp-level accesses allowed per block before a lane that loads is switched out (about
// 17 MB of records by default); only very long barrier-free stretches reach it.
std::atomic<std::size_t> g_max_pending{32768};
constexpr int kSiteBits = 19;  // distinct call sites per launch

using profile_detail::g_mode;

enum class Math { f32, tf32, bf16 };

Math math_of(const char* kernel, const char* math) {
  const std::string m = math ? math : "";
  AE_CHECK(m == "f32" || m == "tf32" || m == "bf16",
           "emulated-device profile: math '" << m << "' for " << kernel << " is not f32, tf32 or bf16");
  return m == "f32" ? Math::f32 : (m == "tf32" ? Math::tf32 : Math::bf16);
}

void add_flops(KernelProfile& k, double flops, Math math) {
  (math == Math::f32 ? k.flops_f32 : (math == Math::tf32 ? k.flops_tf32 : k.flops_bf16)) += flops;
}

// FLOPs declared by profile_next_launch_flops for the next launch on this thread (only the
// flops_* fields are used).
thread_local KernelProfile t_next_flops;

struct Registry {
  std::mutex mutex;
  std::map<std::string, KernelProfile> kernels;
  ~Registry();
};

Registry& registry() {
  static Registry r;
  return r;
}

void add(GlobalTraffic& a, const GlobalTraffic& b) {
  a.accesses += b.accesses;
  a.requested_bytes += b.requested_bytes;
  a.sectors += b.sectors;
  a.ideal_sectors += b.ideal_sectors;
}
void add(SharedTraffic& a, const SharedTraffic& b) {
  a.accesses += b.accesses;
  a.requested_bytes += b.requested_bytes;
  a.wavefronts += b.wavefronts;
  a.ideal_wavefronts += b.ideal_wavefronts;
}

struct LaneRecord {
  uint64_t addr;
  uint32_t size;
};

struct Pending {
  uint32_t mask = 0;         // lanes that recorded this access
  uint32_t shared_mask = 0;  // of those, the lanes whose address is in shared memory
  int warp = 0;
  bool store = false;
  uint32_t slot_in_warp = 0;  // index in Recorder::warp_entries_[warp]
  uint64_t key = 0;
  std::array<LaneRecord, kWarpSize> lanes;
};

// Per-thread recording state of the launch running on this OS thread.
class Recorder {
 public:
  void begin(const char* kernel, unsigned threads) {
    stats_ = KernelProfile{};
    stats_.kernel = kernel;
    stats_.launches = 1;
    threads_ = static_cast<int>(threads);
    warps_ = (threads_ + kWarpSize - 1) / kWarpSize;
    counts_.assign(static_cast<std::size_t>(threads_), {});
    live_.assign(static_cast<std::size_t>(warps_), 0u);
    warp_entries_.assign(static_cast<std::size_t>(warps_), {});
    sites_.clear();
    last_site_ = nullptr;
    pending_.clear();
    free_.clear();
    pool_.clear();
    if (host_stack_len_ == 0) learn_host_stack();
    max_pending_ = g_max_pending.load(std::memory_order_relaxed);
  }

  void block_begin(const profile_detail::BlockMemory& m) {
    shared_lo_ = reinterpret_cast<uintptr_t>(m.shared);
    shared_len_ = m.shared_bytes;
    fibers_lo_ = reinterpret_cast<uintptr_t>(m.fibers);
    fibers_len_ = m.fibers_bytes;
    slots_lo_ = reinterpret_cast<uintptr_t>(m.warp_slots);
    slots_len_ = m.warp_slots_bytes;
    stacks_lo_ = reinterpret_cast<uintptr_t>(m.stacks);
    stacks_len_ = m.stacks_bytes;
    for (int w = 0; w < warps_; ++w) {
      const int lanes = std::min(kWarpSize, threads_ - w * kWarpSize);
      live_[static_cast<std::size_t>(w)] = lanes == kWarpSize ? 0xFFFFFFFFu : (1u << lanes) - 1u;
    }
    ++stats_.blocks;
    stats_.threads += static_cast<uint64_t>(threads_);
  }

  void switch_to(int thread) { current_ = thread; }

  void record(uintptr_t addr, std::size_t size, bool store, const void* site) {
    if (size == 0) return;
    bool shared = false;
    if (addr - shared_lo_ < shared_len_) {
      shared = true;
    } else if (addr - stacks_lo_ < stacks_len_ || addr - host_stack_lo_ < host_stack_len_ ||
               addr - fibers_lo_ < fibers_len_ || addr - slots_lo_ < slots_len_ || addr - image_lo() < image_len()) {
      return;  // registers/local memory, kernel parameters, the scheduler's own state, constants
    }
    const uint32_t s = site_index(site);
    const int t = current_;
    const int w = t / kWarpSize, lane = t % kWarpSize;
    std::vector<uint32_t>& counts = counts_[static_cast<std::size_t>(t)];
    if (s >= counts.size()) counts.resize(s + 1, 0u);
    const uint64_t k = counts[s]++;
    const uint64_t key = k << (kSiteBits + 5) | uint64_t{s} << 5 | static_cast<uint64_t>(w);
    auto [it, inserted] = pending_.try_emplace(key, 0u);
    if (inserted) it->second = allocate(key, w, store);
    Pending& p = pool_[it->second];
    p.lanes[static_cast<std::size_t>(lane)] = {addr, static_cast<uint32_t>(size)};
    p.mask |= 1u << lane;
    if (shared) p.shared_mask |= 1u << lane;
    if ((live_[static_cast<std::size_t>(w)] & ~p.mask) == 0u) {
      retire(it->second);
      pending_.erase(it);
    } else if (!store && pending_.size() > max_pending_) {
      ++stats_.preemptions;
      preempt_current_thread();
    }
  }

  void thread_exited(int thread) {
    const std::size_t w = static_cast<std::size_t>(thread / kWarpSize);
    live_[w] &= ~(1u << (thread % kWarpSize));
    // Accesses that waited only for this lane are complete now (all of them when no lane is left).
    std::vector<uint32_t>& entries = warp_entries_[w];
    for (std::size_t i = entries.size(); i-- > 0;) {
      const uint32_t idx = entries[i];
      if ((live_[w] & ~pool_[idx].mask) == 0u) {
        pending_.erase(pool_[idx].key);
        retire(idx);
      }
    }
  }

  void warp_synced(int warp, unsigned mask) {
    const std::size_t w = static_cast<std::size_t>(warp);
    // A barrier of only some lanes leaves the others elsewhere in the code: keep matching.
    if ((live_[w] & ~mask) != 0u) return;
    flush_warp(w);
  }

  void flush_all() {
    for (std::size_t w = 0; w < warp_entries_.size(); ++w) flush_warp(w);
  }

  KernelProfile& stats() { return stats_; }

 private:
  static uintptr_t image_lo() { return reinterpret_cast<uintptr_t>(__executable_start); }
  static std::size_t image_len() { return static_cast<std::size_t>(_end - __executable_start); }

  void learn_host_stack() {
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) != 0) return;
    void* lo = nullptr;
    std::size_t len = 0;
    if (pthread_attr_getstack(&attr, &lo, &len) == 0) {
      host_stack_lo_ = reinterpret_cast<uintptr_t>(lo);
      host_stack_len_ = len;
    }
    pthread_attr_destroy(&attr);
  }

  uint32_t site_index(const void* site) {
    if (site == last_site_) return last_index_;
    auto [it, inserted] = sites_.try_emplace(site, static_cast<uint32_t>(sites_.size()));
    AE_CHECK(it->second < (1u << kSiteBits), "emulated-device profile: more than " << (1u << kSiteBits)
                                                                                   << " memory-access sites in kernel "
                                                                                   << stats_.kernel);
    last_site_ = site;
    last_index_ = it->second;
    return it->second;
  }

  uint32_t allocate(uint64_t key, int warp, bool store) {
    uint32_t idx;
    if (!free_.empty()) {
      idx = free_.back();
      free_.pop_back();
    } else {
      idx = static_cast<uint32_t>(pool_.size());
      pool_.emplace_back();
    }
    Pending& p = pool_[idx];
    p.mask = 0;
    p.shared_mask = 0;
    p.warp = warp;
    p.store = store;
    p.key = key;
    std::vector<uint32_t>& entries = warp_entries_[static_cast<std::size_t>(warp)];
    p.slot_in_warp = static_cast<uint32_t>(entries.size());
    entries.push_back(idx);
    return idx;
  }

  // Counts the access and frees its entry (the caller removes it from pending_).
  void retire(uint32_t idx) {
    Pending& p = pool_[idx];
    const uint32_t global_lanes = p.mask & ~p.shared_mask, shared_lanes = p.mask & p.shared_mask;
    if (global_lanes) count_global(p, global_lanes, p.store ? stats_.global_store : stats_.global_load);
    if (shared_lanes) count_shared(p, shared_lanes, p.store ? stats_.shared_store : stats_.shared_load);
    std::vector<uint32_t>& entries = warp_entries_[static_cast<std::size_t>(p.warp)];
    const uint32_t moved = entries.back();
    entries[p.slot_in_warp] = moved;
    pool_[moved].slot_in_warp = p.slot_in_warp;
    entries.pop_back();
    free_.push_back(idx);
  }

  // Counts every pending access of the warp as it stands and restarts the occurrence counts: all
  // its live lanes are at the same point of the program now.
  void flush_warp(std::size_t w) {
    std::vector<uint32_t>& entries = warp_entries_[w];
    while (!entries.empty()) {
      const uint32_t idx = entries.back();
      pending_.erase(pool_[idx].key);
      retire(idx);
    }
    const int first = static_cast<int>(w) * kWarpSize;
    const int last = std::min(first + kWarpSize, threads_);
    for (int t = first; t < last; ++t) {
      std::vector<uint32_t>& counts = counts_[static_cast<std::size_t>(t)];
      std::fill(counts.begin(), counts.end(), 0u);
    }
  }

  static void count_global(const Pending& p, uint32_t lanes, GlobalTraffic& out) {
    std::array<std::pair<uint64_t, uint64_t>, kWarpSize> spans;  // [begin, end) per lane
    int n = 0;
    uint64_t requested = 0;
    for (int l = 0; l < kWarpSize; ++l) {
      if (!(lanes >> l & 1u)) continue;
      const LaneRecord& r = p.lanes[static_cast<std::size_t>(l)];
      spans[static_cast<std::size_t>(n++)] = {r.addr, r.addr + r.size};
      requested += r.size;
    }
    std::sort(spans.begin(), spans.begin() + n);
    uint64_t distinct = 0, sectors = 0, last_sector = 0;
    bool any = false;
    const auto close = [&](uint64_t lo, uint64_t hi) {
      distinct += hi - lo;
      const uint64_t first = lo / 32, last = (hi - 1) / 32;
      sectors += last - first + 1;
      if (any && first == last_sector) --sectors;  // shared with the previous span
      last_sector = last;
      any = true;
    };
    uint64_t lo = spans[0].first, hi = spans[0].second;
    for (int i = 1; i < n; ++i) {
      const auto [b, e] = spans[static_cast<std::size_t>(i)];
      if (b <= hi) {
        hi = std::max(hi, e);
      } else {
        close(lo, hi);
        lo = b;
        hi = e;
      }
    }
    close(lo, hi);
    ++out.accesses;
    out.requested_bytes += requested;
    out.sectors += sectors;
    out.ideal_sectors += (distinct + 31) / 32;
  }

  void count_shared(const Pending& p, uint32_t lanes, SharedTraffic& out) {
    uint32_t width = 0;
    for (int l = 0; l < kWarpSize; ++l) {
      if (lanes >> l & 1u) {
        width = std::max(width, p.lanes[static_cast<std::size_t>(l)].size);
        out.requested_bytes += p.lanes[static_cast<std::size_t>(l)].size;
      }
    }
    // 64-bit accesses are served per half-warp, 128-bit (and wider) per quarter-warp.
    const int per_phase = width <= 4 ? 32 : (width <= 8 ? 16 : 8);
    for (int first = 0; first < kWarpSize; first += per_phase) {
      words_.clear();
      for (int l = first; l < first + per_phase; ++l) {
        if (!(lanes >> l & 1u)) continue;
        const LaneRecord& r = p.lanes[static_cast<std::size_t>(l)];
        // Banks are numbered from the start of the block's shared memory, as on the GPU.
        const uint64_t offset = r.addr - shared_lo_;
        for (uint64_t word = offset / 4; word <= (offset + r.size - 1) / 4; ++word) words_.push_back(word);
      }
      if (words_.empty()) continue;
      std::sort(words_.begin(), words_.end());
      words_.erase(std::unique(words_.begin(), words_.end()), words_.end());
      std::array<uint32_t, 32> per_bank{};
      uint32_t wavefronts = 0;
      for (uint64_t word : words_) wavefronts = std::max(wavefronts, ++per_bank[word % 32]);
      out.wavefronts += wavefronts;
      out.ideal_wavefronts += 1;
    }
    ++out.accesses;
  }

  KernelProfile stats_;
  int threads_ = 0, warps_ = 0, current_ = 0;
  std::vector<std::vector<uint32_t>> counts_;  // per thread: occurrences per site since the last sync
  std::vector<uint32_t> live_;                 // per warp: lanes that have not exited
  std::vector<std::vector<uint32_t>> warp_entries_;
  std::unordered_map<const void*, uint32_t> sites_;
  const void* last_site_ = nullptr;
  uint32_t last_index_ = 0;
  std::unordered_map<uint64_t, uint32_t> pending_;  // (k, site, warp) -> index in pool_
  std::vector<Pending> pool_;
  std::vector<uint32_t> free_;
  std::vector<uint64_t> words_;
  std::size_t max_pending_ = 0;
  uintptr_t shared_lo_ = 0, fibers_lo_ = 0, slots_lo_ = 0, stacks_lo_ = 0, host_stack_lo_ = 0;
  std::size_t shared_len_ = 0, fibers_len_ = 0, slots_len_ = 0, stacks_len_ = 0, host_stack_len_ = 0;
};

// Non-null only while a profiled kernel runs on this thread: the one test every callback makes.
thread_local Recorder* t_recorder = nullptr;

Recorder& thread_recorder() {
  static thread_local Recorder recorder;
  return recorder;
}

inline void on_access(uintptr_t addr, std::size_t size, bool store, const void* site) {
  Recorder* r = t_recorder;
  if (__builtin_expect(r != nullptr, 0)) r->record(addr, size, store, site);
}

std::string fixed(double v, int digits) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

std::string percent(double v) { return fixed(100.0 * v, 1) + "%"; }

std::string math_label(const KernelProfile& k) {
  std::string s;
  const auto add_label = [&s](double f, const char* name) {
    if (f <= 0) return;
    if (!s.empty()) s += "+";
    s += name;
  };
  add_label(k.flops_f32, "f32");
  add_label(k.flops_tf32, "tf32");
  add_label(k.flops_bf16, "bf16");
  return s.empty() ? "-" : s;
}

std::string table_of(const std::vector<KernelProfile>& kernels) {
  std::ostringstream os;
  os << "Emulated-device profile: access counts are exact for what the emulated threads did; the time is an H200 "
        "roofline ESTIMATE (not a measurement; no cache model, so memory time is an upper bound for kernels that "
        "re-read data).\n\n";
  os << "| kernel | launches | gld acc / sectors / eff | gst acc / sectors / eff | global MB req / sect | "
        "smem ld acc / conflicts | smem st acc / conflicts | GFLOP (math) | FLOP/B | ESTIMATE us | bound |\n";
  os << "|---|---:|---|---|---|---|---|---|---:|---:|---|\n";
  for (const KernelProfile& k : kernels) {
    const RooflineEstimate r = roofline_h200(k);
    os << "| " << k.kernel << " | " << k.launches << " | " << k.global_load.accesses << " / " << k.global_load.sectors
       << " / " << percent(k.global_load.efficiency()) << " | " << k.global_store.accesses << " / "
       << k.global_store.sectors << " / " << percent(k.global_store.efficiency()) << " | "
       << fixed(static_cast<double>(k.global_requested_bytes()) / 1e6, 3) << " / "
       << fixed(static_cast<double>(k.global_sector_bytes()) / 1e6, 3) << " | " << k.shared_load.accesses << " / "
       << k.shared_load.conflicts() << " | " << k.shared_store.accesses << " / " << k.shared_store.conflicts() << " | "
       << fixed(k.flops() / 1e9, 3) << " (" << math_label(k) << ") | " << fixed(r.intensity, 2) << " | "
       << fixed(r.estimate_s * 1e6, 2) << " | " << (k.flops() > 0 ? (r.memory_bound ? "memory" : "compute") : "memory")
       << " |\n";
  }
  os << "\ngld/gst: warp-level global loads/stores; eff = ideal sectors / sectors. conflicts = shared-memory "
        "wavefronts beyond one per phase. ESTIMATE us = max(FLOPs / peak of the declared math, sector bytes / "
        "4.8 TB/s), summed over launches.\n";
  uint64_t accesses = 0;
  for (const KernelProfile& k : kernels) {
    accesses += k.global_load.accesses + k.global_store.accesses + k.shared_load.accesses + k.shared_store.accesses;
  }
  if (accesses == 0) {
    // The usual cause: AE_EMU_PROFILE=1 in a build whose kernels were compiled without the flags.
    os << "No memory access was recorded: the kernels that ran were not instrumented (configure with "
          "-DAE_EMU_PROFILE=ON, g++).\n";
  }
  return os.str();
}

void write_csv(const std::vector<KernelProfile>& kernels, const std::string& path) {
  std::ofstream f(path);
  AE_CHECK(f, "emulated-device profile: cannot write " << path);
  f << "kernel,launches,blocks,threads,gld_accesses,gld_requested_bytes,gld_sectors,gld_ideal_sectors,"
       "gst_accesses,gst_requested_bytes,gst_sectors,gst_ideal_sectors,smem_ld_accesses,smem_ld_wavefronts,"
       "smem_ld_conflicts,smem_st_accesses,smem_st_wavefronts,smem_st_conflicts,flops_f32,flops_tf32,flops_bf16,"
       "intensity_flop_per_byte,estimate_h200_s,bound\n";
  for (const KernelProfile& k : kernels) {
    const RooflineEstimate r = roofline_h200(k);
    std::string name = k.kernel;
    std::replace(name.begin(), name.end(), '"', '\'');
    f << '"' << name << "\"," << k.launches << ',' << k.blocks << ',' << k.threads << ',' << k.global_load.accesses
      << ',' << k.global_load.requested_bytes << ',' << k.global_load.sectors << ',' << k.global_load.ideal_sectors
      << ',' << k.global_store.accesses << ',' << k.global_store.requested_bytes << ',' << k.global_store.sectors << ','
      << k.global_store.ideal_sectors << ',' << k.shared_load.accesses << ',' << k.shared_load.wavefronts << ','
      << k.shared_load.conflicts() << ',' << k.shared_store.accesses << ',' << k.shared_store.wavefronts << ','
      << k.shared_store.conflicts() << ',' << k.flops_f32 << ',' << k.flops_tf32 << ',' << k.flops_bf16 << ','
      << r.intensity << ',' << r.estimate_s << ',' << (r.memory_bound ? "memory" : "compute") << '\n';
  }
  AE_CHECK(f.good(), "emulated-device profile: error writing " << path);
}

Registry::~Registry() {
  if (!profiling() || kernels.empty()) return;
  std::vector<KernelProfile> all;
  for (const auto& [name, k] : kernels) all.push_back(k);
  std::fputs(("\n" + table_of(all)).c_str(), stderr);
  if (const char* out = std::getenv("AE_EMU_PROFILE_OUT"); out && *out) {
    try {
      write_csv(all, out);
      std::fprintf(stderr, "emulated-device profile written to %s\n", out);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s\n", e.what());
    }
  }
}

}  // namespace

namespace profile_detail {

bool launch_begin(const char* kernel, unsigned threads_per_block) {
  if (!profiling()) return false;
  Recorder& r = thread_recorder();
  r.begin(kernel, threads_per_block);
  KernelProfile& s = r.stats();
  s.flops_f32 = std::exchange(t_next_flops.flops_f32, 0.0);
  s.flops_tf32 = std::exchange(t_next_flops.flops_tf32, 0.0);
  s.flops_bf16 = std::exchange(t_next_flops.flops_bf16, 0.0);
  t_recorder = &r;
  return true;
}

void block_begin(const BlockMemory& memory) { t_recorder->block_begin(memory); }
void switch_to(int thread) { t_recorder->switch_to(thread); }
void thread_exited(int thread) { t_recorder->thread_exited(thread); }
void warp_synced(int warp, unsigned mask) { t_recorder->warp_synced(warp, mask); }
void block_synced() { t_recorder->flush_all(); }
void block_end() { t_recorder->flush_all(); }

void launch_end(bool completed) {
  Recorder* r = std::exchange(t_recorder, nullptr);
  if (!r || !completed) return;
  r->flush_all();
  KernelProfile& s = r->stats();
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  KernelProfile& k = reg.kernels[s.kernel];
  k.kernel = s.kernel;
  k.launches += s.launches;
  k.blocks += s.blocks;
  k.threads += s.threads;
  add(k.global_load, s.global_load);
  add(k.global_store, s.global_store);
  add(k.shared_load, s.shared_load);
  add(k.shared_store, s.shared_store);
  k.preemptions += s.preemptions;
  k.flops_f32 += s.flops_f32;
  k.flops_tf32 += s.flops_tf32;
  k.flops_bf16 += s.flops_bf16;
}

}  // namespace profile_detail

bool profiling() {
  int mode = g_mode.load(std::memory_order_relaxed);
  if (mode < 0) {
    const char* env = std::getenv("AE_EMU_PROFILE");
    mode = env && env[0] == '1' ? 1 : 0;
    int expected = -1;
    if (!g_mode.compare_exchange_strong(expected, mode)) mode = expected;
  }
  return mode == 1;
}

void set_profiling(bool on) { g_mode.store(on ? 1 : 0); }

void profile_access(const void* addr, std::size_t bytes, bool store, const void* site) {
  on_access(reinterpret_cast<uintptr_t>(addr), bytes, store, site);
}

void profile_detail::load_reported_slow(void* to, const void* from, std::size_t bytes) {
  on_access(reinterpret_cast<uintptr_t>(from), bytes, /*store=*/false, __builtin_return_address(0));
  std::memcpy(to, from, bytes);
}

void profile_detail::store_reported_slow(void* to, const void* from, std::size_t bytes) {
  on_access(reinterpret_cast<uintptr_t>(to), bytes, /*store=*/true, __builtin_return_address(0));
  std::memcpy(to, from, bytes);
}

void set_profile_max_pending(std::size_t accesses) { g_max_pending.store(std::max<std::size_t>(accesses, 1)); }
std::size_t profile_max_pending() { return g_max_pending.load(); }

void profile_note_flops(const char* kernel, double flops, const char* math) {
  if (!profiling()) return;
  const Math m = math_of(kernel, math);
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  KernelProfile& k = reg.kernels[kernel];
  k.kernel = kernel;
  add_flops(k, flops, m);
}

void profile_next_launch_flops(double flops, const char* math) {
  if (!profiling()) return;
  add_flops(t_next_flops, flops, math_of("the next launch", math));  // declarations before one launch add up
}

RooflineEstimate roofline_h200(const KernelProfile& k) {
  RooflineEstimate r;
  r.flops = k.flops();
  r.bytes = static_cast<double>(k.global_sector_bytes());
  r.intensity = r.bytes > 0 ? r.flops / r.bytes : 0.0;
  r.compute_s = k.flops_f32 / kH200Fp32FlopsPerS + k.flops_tf32 / kH200Tf32FlopsPerS + k.flops_bf16 / kH200Bf16FlopsPerS;
  r.memory_s = r.bytes / kH200HbmBytesPerS;
  r.estimate_s = std::max(r.compute_s, r.memory_s);
  r.memory_bound = r.memory_s >= r.compute_s;
  return r;
}

std::vector<KernelProfile> profile_results() {
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  std::vector<KernelProfile> all;
  for (const auto& [name, k] : reg.kernels) all.push_back(k);
  return all;
}

void profile_reset() {
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  reg.kernels.clear();
}

std::string profile_table() { return table_of(profile_results()); }

void write_profile_csv(const std::string& path) { write_csv(profile_results(), path); }

}  // namespace ae::emu

// The instrumentation callbacks. A build with the real AddressSanitizer (AE_SANITIZE) has its own
// definitions and never instruments for the profile, so these are left out there.
#if defined(__SANITIZE_ADDRESS__)
#define AE_EMU_PROFILE_CALLBACKS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AE_EMU_PROFILE_CALLBACKS 0
#endif
#endif
#ifndef AE_EMU_PROFILE_CALLBACKS
#define AE_EMU_PROFILE_CALLBACKS 1
#endif

#if AE_EMU_PROFILE_CALLBACKS
#define AE_EMU_ACCESS_CALLBACK(kind, bytes, is_store)                                         \
  extern "C" void __asan_##kind##bytes##_noabort(uintptr_t addr) {                            \
    ::ae::emu::on_access(addr, bytes, is_store, __builtin_return_address(0));                  \
  }
AE_EMU_ACCESS_CALLBACK(load, 1, false)
AE_EMU_ACCESS_CALLBACK(load, 2, false)
AE_EMU_ACCESS_CALLBACK(load, 4, false)
AE_EMU_ACCESS_CALLBACK(load, 8, false)
AE_EMU_ACCESS_CALLBACK(load, 16, false)
AE_EMU_ACCESS_CALLBACK(store, 1, true)
AE_EMU_ACCESS_CALLBACK(store, 2, true)
AE_EMU_ACCESS_CALLBACK(store, 4, true)
AE_EMU_ACCESS_CALLBACK(store, 8, true)
AE_EMU_ACCESS_CALLBACK(store, 16, true)
#undef AE_EMU_ACCESS_CALLBACK
extern "C" void __asan_loadN_noabort(uintptr_t addr, std::size_t size) {
  ::ae::emu::on_access(addr, size, false, __builtin_return_address(0));
}
extern "C" void __asan_storeN_noabort(uintptr_t addr, std::size_t size) {
  ::ae::emu::on_access(addr, size, true, __builtin_return_address(0));
}
// Emitted before calls that do not return (throw, abort) and around dynamic initialisers of
// globals: nothing to do without shadow memory.
extern "C" void __asan_handle_no_return() {}
extern "C" void __asan_before_dynamic_init(const char*) {}
extern "C" void __asan_after_dynamic_init() {}
#endif
