// cp.async on the emulated device (see async_copy.h for the model).
#include "kernels/emu/async_copy.h"

#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <sstream>
#include <tuple>
#include <vector>

#include "kernels/emu/profile.h"
#include "kernels/emu/scheduler.h"
#include "runtime/error.h"

namespace ae::emu {
namespace {

struct Copy {
  unsigned char* dst;
  int bytes;
  unsigned char data[16];  // the source bytes captured at issue, then the zero-fill
};

struct ThreadCopies {
  std::vector<Copy> uncommitted;
  std::deque<std::vector<Copy>> groups;  // committed, oldest first
  // Empty groups pending at exit lose nothing (a pipeline's last commits are often empty).
  bool idle() const { return copies() == 0; }
  std::size_t copies() const {
    std::size_t n = uncommitted.size();
    for (const auto& g : groups) n += g.size();
    return n;
  }
};

// (block x, y, z, thread linear index)
using Key = std::tuple<unsigned, unsigned, unsigned, int>;

struct State {
  std::map<Key, ThreadCopies> threads;
  bool have_block = false;
  uint3 block{0, 0, 0};
  AsyncCopyStats stats;
};

// The scheduler runs all fibers of a launch on the launching OS thread, so per-OS-thread state
// holds every emulated thread of the grids it runs.
State& state() {
  thread_local State s;
  return s;
}

std::string describe_leaks(State& s) {
  std::ostringstream os;
  for (const auto& [key, t] : s.threads) {
    if (t.idle()) continue;
    os << "block (" << std::get<0>(key) << "," << std::get<1>(key) << "," << std::get<2>(key) << ") thread "
       << std::get<3>(key) << " ended with " << t.copies() << " cp.async copies outstanding (" << t.groups.size()
       << " committed groups, " << t.uncommitted.size() << " uncommitted)\n";
  }
  return os.str();
}

// This emulated thread's copies. Entering a new block first checks that every thread of the
// previous one drained its copies (the closest we get to a check at thread exit).
ThreadCopies& mine() {
  State& s = state();
  const uint3 b = this_block().block_idx;
  if (!s.have_block || b.x != s.block.x || b.y != s.block.y || b.z != s.block.z) {
    const std::string leaks = describe_leaks(s);
    s.threads.clear();
    s.have_block = true;
    s.block = b;
    AE_CHECK(leaks.empty(), "emulated device: a thread ended with cp.async copies outstanding (a missing "
                            "cp.async.wait_group / wait_all before the thread exits):\n"
                                << leaks);
  }
  return s.threads[Key{b.x, b.y, b.z, this_thread().linear}];
}

void complete(std::vector<Copy>& group) {
  for (const Copy& c : group) std::memcpy(c.dst, c.data, static_cast<std::size_t>(c.bytes));
  state().stats.completed += group.size();
  group.clear();
}

}  // namespace

void async_copy_issue(void* dst, const void* src, int bytes, int src_bytes) {
  AE_CHECK(bytes == 4 || bytes == 8 || bytes == 16, "cp.async: copy size " << bytes << " (must be 4, 8 or 16)");
  AE_CHECK(src_bytes >= 0 && src_bytes <= bytes,
           "cp.async: src-size " << src_bytes << " outside 0.." << bytes << " (cp-size)");
  AE_CHECK(reinterpret_cast<std::uintptr_t>(dst) % static_cast<std::uintptr_t>(bytes) == 0 &&
               (src_bytes == 0 || reinterpret_cast<std::uintptr_t>(src) % static_cast<std::uintptr_t>(bytes) == 0),
           "cp.async: " << bytes << "-byte copy with a misaligned address (shared " << dst << ", global " << src
                        << ")");
  // The profile mode (kernels/emu/profile.h) sees this copy as the kernel's own global load and
  // shared store at the issuing instruction; a zero-filled copy reads no global memory.
  const void* site = __builtin_return_address(0);
  if (src_bytes > 0) profile_access(src, static_cast<std::size_t>(src_bytes), /*store=*/false, site);
  profile_access(dst, static_cast<std::size_t>(bytes), /*store=*/true, static_cast<const char*>(site) + 1);
  ThreadCopies& t = mine();
  Copy c{static_cast<unsigned char*>(dst), bytes, {}};
  if (src_bytes > 0) std::memcpy(c.data, src, static_cast<std::size_t>(src_bytes));
  std::memset(c.data + src_bytes, 0, static_cast<std::size_t>(bytes - src_bytes));
  std::memset(dst, 0xFF, static_cast<std::size_t>(bytes));  // not there yet: NaN until the wait
  t.uncommitted.push_back(c);
  ++state().stats.issued;
}

void async_copy_commit() {
  ThreadCopies& t = mine();
  t.groups.push_back(std::move(t.uncommitted));
  t.uncommitted.clear();
  ++state().stats.groups;
}

void async_copy_wait_group(int n) {
  AE_CHECK(n >= 0 && n <= 7, "cp.async.wait_group " << n << ": the pending-group count must be 0..7");
  ThreadCopies& t = mine();
  while (t.groups.size() > static_cast<std::size_t>(n)) {
    complete(t.groups.front());
    t.groups.pop_front();
  }
}

void async_copy_wait_all() {
  async_copy_commit();
  async_copy_wait_group(0);
}

int async_copy_outstanding_groups() { return static_cast<int>(mine().groups.size()); }
int async_copy_uncommitted() { return static_cast<int>(mine().uncommitted.size()); }

AsyncCopyStats async_copy_stats() { return state().stats; }

std::string async_copy_take_leaks() {
  State& s = state();
  std::string leaks = describe_leaks(s);
  s.threads.clear();
  s.have_block = false;
  return leaks;
}

}  // namespace ae::emu
