// Fiber scheduler of the emulated device (see scheduler.h for the model).
#include "kernels/emu/scheduler.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "kernels/emu/profile_hooks.h"
#include "runtime/error.h"

// AddressSanitizer must be told about every stack switch, or it reports the fibers' frames as
// overflows of the thread's stack (make sanitize runs the gpu label on this scheduler).
#if defined(__SANITIZE_ADDRESS__)
#define AE_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AE_EMU_ASAN 1
#endif
#endif
#ifdef AE_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

// Stack switching. glibc's swapcontext saves and restores the signal mask with a system call at
// every switch; with a switch at every __syncthreads and warp operation of every emulated thread,
// that call was 35-40 % of the emulated device's time (perf, 2026-12-01). On x86-64 the switch is
// the few instructions below instead: the callee-saved registers and the SSE/x87 control words
// pushed on the old stack, the stack pointer swapped, the same popped from the new one. The signal
// mask never changes on these threads, so nothing else needs saving. Other architectures keep
// ucontext.
#if defined(__x86_64__)
#define AE_EMU_FAST_SWITCH 1
extern "C" void ae_emu_switch_stack(void** save_sp, void* load_sp);
asm(R"(
  .text
  .p2align 4
  .globl ae_emu_switch_stack
  .hidden ae_emu_switch_stack
  .type ae_emu_switch_stack, @function
ae_emu_switch_stack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size ae_emu_switch_stack, .-ae_emu_switch_stack
  .section .note.GNU-stack, "", @progbits
  .text
)");
#endif

namespace ae::emu {
namespace {

// A suspended execution context: a fiber's, or the scheduler's while a fiber runs.
struct Context {
#ifdef AE_EMU_FAST_SWITCH
  void* sp = nullptr;  // where ae_emu_switch_stack left the saved registers
#else
  ucontext_t uc;
#endif
};

// Saves the running context in `from` and resumes `to`.
inline void switch_context(Context& from, Context& to) {
#ifdef AE_EMU_FAST_SWITCH
  ae_emu_switch_stack(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
}

// The stack switches, annotated for ASan (no-ops otherwise). `fake_stack` is ASan's per-context
// save slot; nullptr when the context being left will never be resumed.
#ifdef AE_EMU_ASAN
inline void asan_start_switch(void** fake_stack, const void* bottom, std::size_t size) {
  __sanitizer_start_switch_fiber(fake_stack, bottom, size);
}
inline void asan_finish_switch(void* fake_stack, const void** bottom_old, std::size_t* size_old) {
  __sanitizer_finish_switch_fiber(fake_stack, bottom_old, size_old);
}
// A reused fiber stack may hold the poisoned redzones of frames abandoned when a kernel failed.
inline void asan_unpoison(void* p, std::size_t n) { ASAN_UNPOISON_MEMORY_REGION(p, n); }
#else
inline void asan_start_switch(void**, const void*, std::size_t) {}
inline void asan_finish_switch(void*, const void**, std::size_t*) {}
inline void asan_unpoison(void*, std::size_t) {}
#endif

enum class FiberState { ready, at_block_barrier, at_warp_barrier, done };

struct Fiber {
  Context context;
  ThreadState pub;
  FiberState state = FiberState::ready;
  unsigned warp_mask = 0;
  unsigned whole_warp_exchanges = 0;  // how many this lane has begun in this block (its bank's parity)
  void* asan_fake_stack = nullptr;  // ASan's save slot while this fiber is switched out
};

// Banks 0 and 1 alternate between whole-warp exchanges, bank 2 serves the others
// (scheduler.h, warp_exchange_slots).
struct alignas(16) WarpSlots {
  unsigned char bytes[3][kWarpSize][kWarpSlotBytes];
};

// Stacks for up to 1024 fibers, each below a PROT_NONE guard page so that a kernel overflowing
// its stack faults instead of silently corrupting its neighbour. Reused across launches.
class StackPool {
 public:
  ~StackPool() {
    if (base_) munmap(base_, total_);
  }
  char* stack(int i) const { return base_ + static_cast<std::size_t>(i) * stride_ + page_; }
  const char* base() const { return base_; }
  std::size_t total() const { return total_; }
  std::size_t stack_bytes() const { return stride_ - page_; }
  void reserve(int count) {
    if (count <= capacity_) return;
    if (base_) munmap(base_, total_);
    page_ = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    stride_ = stack_bytes_from_env() + page_;
    total_ = stride_ * static_cast<std::size_t>(count);
    void* p = mmap(nullptr, total_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    AE_CHECK(p != MAP_FAILED, "emulated device: cannot map " << total_ << " bytes of fiber stacks");
    base_ = static_cast<char*>(p);
    capacity_ = count;
    for (int i = 0; i < count; ++i) mprotect(base_ + static_cast<std::size_t>(i) * stride_, page_, PROT_NONE);
  }

 private:
  static std::size_t stack_bytes_from_env() {
    const char* kb = std::getenv("AE_EMU_STACK_KB");
    const long v = kb ? std::strtol(kb, nullptr, 10) : 0;
    return static_cast<std::size_t>(v >= 16 ? v : 64) * 1024;
  }
  char* base_ = nullptr;
  std::size_t page_ = 0, stride_ = 0, total_ = 0;
  int capacity_ = 0;
};

struct Block {
  const char* kernel = "";
  BlockState pub;
  std::vector<Fiber> fibers;
  std::vector<WarpSlots> warps;
  std::vector<unsigned> existing_lanes;  // per warp
  unsigned char* shared = nullptr;       // kMaxSharedPerBlock bytes, 16-aligned
  std::size_t dynamic_bytes = 0;
  std::size_t static_used = 0;
  std::vector<std::pair<const void*, std::size_t>> static_arrays;  // key -> offset
  const std::function<void()>* body = nullptr;
  Context scheduler;
  std::exception_ptr error;
  // The scheduler's (the thread's) stack, learnt by the first fiber that starts (ASan only).
  const void* scheduler_stack = nullptr;
  std::size_t scheduler_stack_bytes = 0;
  void* scheduler_fake_stack = nullptr;
  // This launch is profiled (profile.h): tell the profiler about switches, barriers and exits.
  bool profile = false;
};

thread_local Block* t_block = nullptr;
thread_local Fiber* t_fiber = nullptr;

uint64_t& seed_storage() {
  static uint64_t s = [] {
    const char* env = std::getenv("AE_EMU_SEED");
    return env ? std::strtoull(env, nullptr, 10) : uint64_t{1};
  }();
  return s;
}

Block& current_block() {
  AE_CHECK(t_block != nullptr && t_fiber != nullptr, "emulated device: device function called outside a kernel");
  return *t_block;
}

void yield_to_scheduler() {
  Fiber* self = t_fiber;
  asan_start_switch(&self->asan_fake_stack, t_block->scheduler_stack, t_block->scheduler_stack_bytes);
  switch_context(self->context, t_block->scheduler);
  asan_finish_switch(self->asan_fake_stack, nullptr, nullptr);
}

void fiber_main() {
  asan_finish_switch(nullptr, &t_block->scheduler_stack, &t_block->scheduler_stack_bytes);
  try {
    (*t_block->body)();
  } catch (...) {
    t_block->error = std::current_exception();
  }
  t_fiber->state = FiberState::done;
  // This stack is left for good: the scheduler is resumed (below, or by ucontext's uc_link).
  asan_start_switch(nullptr, t_block->scheduler_stack, t_block->scheduler_stack_bytes);
}

#ifdef AE_EMU_FAST_SWITCH
// A fiber's first frame. Never returns: its return address is a null sentinel that ends unwinding.
[[noreturn]] void fiber_entry() {
  fiber_main();
  Context finished;  // never resumed
  ae_emu_switch_stack(&finished.sp, t_block->scheduler.sp);
  __builtin_unreachable();
}

// Prepares `c` to start fiber_entry on the stack [stack, stack + bytes): the frame
// ae_emu_switch_stack pops (control words, six registers, the address it returns to), placed so
// that fiber_entry starts with the stack aligned as after a call (rsp % 16 == 8).
void make_context(Context& c, char* stack, std::size_t bytes) {
  auto top = reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15};
  auto* slot = reinterpret_cast<uint64_t*>(top);
  *--slot = 0;                                              // fiber_entry's return address: none
  *--slot = reinterpret_cast<uint64_t>(&fiber_entry);       // where the first switch returns
  for (int r = 0; r < 6; ++r) *--slot = 0;                  // rbp, rbx, r12-r15
  uint32_t mxcsr = 0;                                       // this thread's SSE and x87 control words
  uint16_t fpu_control = 0;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpu_control));
  const uint32_t control[2] = {mxcsr, fpu_control};         // the layout ae_emu_switch_stack loads
  std::memcpy(--slot, control, sizeof control);
  c.sp = slot;
}
#endif

std::string where(const Block& b, const Fiber& f) {
  std::ostringstream os;
  os << "kernel " << b.kernel << " block (" << b.pub.block_idx.x << "," << b.pub.block_idx.y << ","
     << b.pub.block_idx.z << ") thread (" << f.pub.thread_idx.x << "," << f.pub.thread_idx.y << ","
     << f.pub.thread_idx.z << ")";
  return os.str();
}

// Releases the barrier of one warp, chosen at random among those whose lanes have all arrived, so
// that warps drift apart between block barriers as they do on a GPU (releasing every warp at once
// would run warp-synchronous code, e.g. mma loops, in lockstep across warps and hide a missing
// __syncthreads between them). Returns whether one was released.
bool release_warp_barriers(Block& b, std::mt19937_64& rng) {
  std::vector<std::pair<int, unsigned>> complete_barriers;  // (warp, mask)
  const int warp_count = static_cast<int>(b.warps.size());
  for (int w = 0; w < warp_count; ++w) {
    const int first = w * kWarpSize;
    const int last = std::min(first + kWarpSize, static_cast<int>(b.fibers.size()));
    for (int i = first; i < last; ++i) {
      Fiber& f = b.fibers[static_cast<std::size_t>(i)];
      if (f.state != FiberState::at_warp_barrier) continue;
      const unsigned mask = f.warp_mask;
      // A group of lanes is checked once, from its lowest lane.
      if ((mask >> (i - first) & 1u) && (mask & ((1u << (i - first)) - 1u)) != 0) continue;
      bool complete = true;
      for (int j = first; j < last; ++j) {
        if (!(mask >> (j - first) & 1u)) continue;
        const Fiber& g = b.fibers[static_cast<std::size_t>(j)];
        if (g.state == FiberState::done) {
          AE_FAIL("emulated device: " << where(b, f) << " waits at a warp operation with mask 0x" << std::hex << mask
                                      << " but lane " << std::dec << (j - first) << " has already exited");
        }
        if (g.state != FiberState::at_warp_barrier) {
          complete = false;
          break;
        }
        AE_CHECK(g.warp_mask == mask, "emulated device: " << where(b, f) << " and lane " << (j - first)
                                                          << " disagree on the warp mask (0x" << std::hex << mask
                                                          << " vs 0x" << g.warp_mask << ")");
      }
      if (complete) complete_barriers.emplace_back(w, mask);
    }
  }
  if (complete_barriers.empty()) return false;
  std::uniform_int_distribution<std::size_t> pick(0, complete_barriers.size() - 1);
  const auto [w, mask] = complete_barriers[pick(rng)];
  if (b.profile) profile_detail::warp_synced(w, mask);
  const int first = w * kWarpSize;
  const int last = std::min(first + kWarpSize, static_cast<int>(b.fibers.size()));
  for (int j = first; j < last; ++j) {
    if (mask >> (j - first) & 1u) b.fibers[static_cast<std::size_t>(j)].state = FiberState::ready;
  }
  return true;
}

bool release_block_barrier(Block& b) {
  bool any_waiting = false;
  for (const Fiber& f : b.fibers) {
    if (f.state == FiberState::at_block_barrier) any_waiting = true;
    else if (f.state != FiberState::done) return false;
  }
  if (!any_waiting) return false;
  if (b.profile) profile_detail::block_synced();
  for (Fiber& f : b.fibers) {
    if (f.state == FiberState::at_block_barrier) f.state = FiberState::ready;
  }
  return true;
}

[[noreturn]] void report_deadlock(const Block& b) {
  std::ostringstream os;
  int at_block = 0, at_warp = 0, done = 0;
  const Fiber* example = nullptr;
  for (const Fiber& f : b.fibers) {
    if (f.state == FiberState::at_block_barrier) ++at_block;
    if (f.state == FiberState::at_warp_barrier) {
      ++at_warp;
      if (!example) example = &f;
    }
    if (f.state == FiberState::done) ++done;
  }
  os << "emulated device: deadlock in kernel " << b.kernel << ": " << at_block << " threads wait at __syncthreads, "
     << at_warp << " at a warp operation, " << done << " have exited";
  if (example) os << " (e.g. " << where(b, *example) << ", mask 0x" << std::hex << example->warp_mask << ")";
  AE_FAIL(os.str());
}

void run_block(Block& b, StackPool& stacks, const Context& prototype, std::mt19937_64& rng) {
  const std::size_t n = b.fibers.size();
  // Poison shared memory so that reading before writing gives NaN, not a plausible zero.
  std::memset(b.shared, 0xFF, b.dynamic_bytes);
  b.static_used = 0;
  b.static_arrays.clear();
  for (WarpSlots& w : b.warps) std::memset(&w, 0xFF, sizeof(w));
  for (std::size_t i = 0; i < n; ++i) {
    Fiber& f = b.fibers[i];
    f.state = FiberState::ready;
    f.whole_warp_exchanges = 0;
    asan_unpoison(stacks.stack(static_cast<int>(i)), stacks.stack_bytes());
#ifdef AE_EMU_FAST_SWITCH
    (void)prototype;
    make_context(f.context, stacks.stack(static_cast<int>(i)), stacks.stack_bytes());
#else
    f.context = prototype;
    f.context.uc.uc_stack.ss_sp = stacks.stack(static_cast<int>(i));
    f.context.uc.uc_stack.ss_size = stacks.stack_bytes();
    f.context.uc.uc_link = &b.scheduler.uc;
    makecontext(&f.context.uc, fiber_main, 0);
#endif
  }
  if (b.profile) {
    profile_detail::block_begin({b.shared, kMaxSharedPerBlock, b.fibers.data(), n * sizeof(Fiber), b.warps.data(),
                                 b.warps.size() * sizeof(WarpSlots), stacks.base(), stacks.total()});
  }
  std::vector<std::size_t> order;
  order.reserve(n);
  for (;;) {
    order.clear();
    for (std::size_t i = 0; i < n; ++i) {
      if (b.fibers[i].state == FiberState::ready) order.push_back(i);
    }
    if (order.empty()) {
      if (release_warp_barriers(b, rng) || release_block_barrier(b)) continue;
      for (const Fiber& f : b.fibers) {
        if (f.state != FiberState::done) report_deadlock(b);
      }
      if (b.profile) profile_detail::block_end();
      return;
    }
    std::shuffle(order.begin(), order.end(), rng);
    for (std::size_t i : order) {
      t_fiber = &b.fibers[i];
      if (b.profile) profile_detail::switch_to(static_cast<int>(i));
      asan_start_switch(&b.scheduler_fake_stack, stacks.stack(static_cast<int>(i)), stacks.stack_bytes());
      switch_context(b.scheduler, t_fiber->context);
      asan_finish_switch(b.scheduler_fake_stack, nullptr, nullptr);
      if (b.profile && t_fiber->state == FiberState::done) profile_detail::thread_exited(static_cast<int>(i));
      if (b.error) {
        const std::exception_ptr e = std::exchange(b.error, nullptr);
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          AE_FAIL("emulated device: " << where(b, b.fibers[i]) << ": " << ex.what());
        }
      }
    }
  }
}

void check_dims(const char* name, dim3 grid, dim3 block, std::size_t dynamic_bytes) {
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  AE_CHECK(threads >= 1 && threads <= 1024 && block.z <= 64,
           "emulated device: kernel " << name << " launched with block (" << block.x << "," << block.y << ","
                                      << block.z << "): a block has 1..1024 threads and z <= 64");
  AE_CHECK(grid.x >= 1 && grid.y >= 1 && grid.z >= 1 && grid.x <= 2147483647u && grid.y <= 65535 && grid.z <= 65535,
           "emulated device: kernel " << name << " launched with grid (" << grid.x << "," << grid.y << "," << grid.z
                                      << ")");
  AE_CHECK(dynamic_bytes <= kMaxSharedPerBlock, "emulated device: kernel " << name << " asks for " << dynamic_bytes
                                                                         << " bytes of dynamic shared memory (limit "
                                                                         << kMaxSharedPerBlock << ")");
}

}  // namespace

const ThreadState& this_thread() {
  current_block();
  return t_fiber->pub;
}

const BlockState& this_block() { return current_block().pub; }

void sync_block() {
  current_block();
  t_fiber->state = FiberState::at_block_barrier;
  yield_to_scheduler();
}

void preempt_current_thread() {
  current_block();
  yield_to_scheduler();  // the state stays ready: the scheduler resumes this thread in a later round
}

void sync_warp(unsigned mask) {
  Block& b = current_block();
  const ThreadState& me = t_fiber->pub;
  AE_CHECK(mask >> me.lane & 1u, "warp operation with mask 0x" << std::hex << mask << " that excludes the calling lane "
                                                               << std::dec << me.lane);
  const unsigned existing = b.existing_lanes[static_cast<std::size_t>(me.warp)];
  AE_CHECK((mask & ~existing) == 0u, "warp operation with mask 0x" << std::hex << mask << " names lanes outside the block "
                                                                   << "(this warp has lanes 0x" << existing << ")");
  t_fiber->warp_mask = mask;
  t_fiber->state = FiberState::at_warp_barrier;
  yield_to_scheduler();
}

ExchangeSlots warp_exchange_slots(unsigned mask) {
  Block& b = current_block();
  const std::size_t warp = static_cast<std::size_t>(t_fiber->pub.warp);
  WarpSlots& w = b.warps[warp];
  if (mask == b.existing_lanes[warp]) return {&w.bytes[t_fiber->whole_warp_exchanges++ & 1u][0][0], false};
  return {&w.bytes[2][0][0], true};
}

unsigned warp_existing_lanes() {
  Block& b = current_block();
  return b.existing_lanes[static_cast<std::size_t>(t_fiber->pub.warp)];
}

void* static_shared(const void* key, std::size_t bytes) {
  Block& b = current_block();
  for (const auto& [k, offset] : b.static_arrays) {
    if (k == key) return b.shared + offset;
  }
  const std::size_t start = (b.dynamic_bytes + 15) / 16 * 16 + b.static_used;
  const std::size_t rounded = (bytes + 15) / 16 * 16;
  AE_CHECK(b.static_used + rounded <= kMaxStaticShared,
           "static shared memory exceeds " << kMaxStaticShared << " bytes (" << b.static_used + rounded << ")");
  AE_CHECK(start + rounded <= kMaxSharedPerBlock, "static (" << b.static_used + rounded << ") plus dynamic ("
                                                             << b.dynamic_bytes << ") shared memory exceeds "
                                                             << kMaxSharedPerBlock << " bytes");
  std::memset(b.shared + start, 0xFF, rounded);
  b.static_used += rounded;
  b.static_arrays.emplace_back(key, start);
  return b.shared + start;
}

void* dynamic_shared() { return current_block().shared; }
std::size_t dynamic_shared_bytes() { return current_block().dynamic_bytes; }

void set_seed(uint64_t s) { seed_storage() = s; }
uint64_t seed() { return seed_storage(); }

void run_kernel(const char* name, dim3 grid, dim3 block, std::size_t dynamic_bytes, const std::function<void()>& body) {
  AE_CHECK(t_block == nullptr, "emulated device: kernel " << name << " launched from inside another kernel");
  check_dims(name, grid, block, dynamic_bytes);
  static thread_local StackPool stacks;
  static thread_local std::vector<unsigned char> shared_storage(kMaxSharedPerBlock + 16);
  static thread_local uint64_t launch_counter = 0;

  const int threads = static_cast<int>(block.x * block.y * block.z);
  stacks.reserve(threads);
  Block b;
  b.kernel = name;
  b.pub.block_dim = block;
  b.pub.grid_dim = grid;
  b.body = &body;
  b.dynamic_bytes = dynamic_bytes;
  b.shared = shared_storage.data() + (16 - reinterpret_cast<uintptr_t>(shared_storage.data()) % 16) % 16;
  b.fibers.resize(static_cast<std::size_t>(threads));
  const int warp_count = (threads + kWarpSize - 1) / kWarpSize;
  b.warps.resize(static_cast<std::size_t>(warp_count));
  b.existing_lanes.assign(static_cast<std::size_t>(warp_count), 0xFFFFFFFFu);
  if (threads % kWarpSize) b.existing_lanes.back() = (1u << (threads % kWarpSize)) - 1u;
  for (int i = 0; i < threads; ++i) {
    ThreadState& t = b.fibers[static_cast<std::size_t>(i)].pub;
    const unsigned u = static_cast<unsigned>(i);
    t.thread_idx = {u % block.x, u / block.x % block.y, u / (block.x * block.y)};
    t.linear = i;
    t.lane = i % kWarpSize;
    t.warp = i / kWarpSize;
  }

  Context prototype;
#ifndef AE_EMU_FAST_SWITCH
  getcontext(&prototype.uc);
#endif
  std::mt19937_64 rng(seed() * 0x9E3779B97F4A7C15ull + ++launch_counter);

  // Blocks also run in a shuffled order: kernels must not assume blocks run in sequence.
  std::vector<uint64_t> block_order(uint64_t{grid.x} * grid.y * grid.z);
  for (std::size_t i = 0; i < block_order.size(); ++i) block_order[i] = i;
  std::shuffle(block_order.begin(), block_order.end(), rng);

  struct Reset {
    bool profile = false, completed = false;
    ~Reset() {
      t_block = nullptr;
      t_fiber = nullptr;
      if (profile) profile_detail::launch_end(completed);
    }
  } reset;
  t_block = &b;
  b.profile = reset.profile = profile_detail::launch_begin(name, static_cast<unsigned>(threads));
  for (uint64_t linear : block_order) {
    b.pub.block_idx = {static_cast<unsigned>(linear % grid.x), static_cast<unsigned>(linear / grid.x % grid.y),
                       static_cast<unsigned>(linear / (uint64_t{grid.x} * grid.y))};
    run_block(b, stacks, prototype, rng);
  }
  reset.completed = true;
}

}  // namespace ae::emu
