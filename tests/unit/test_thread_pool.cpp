// runtime/thread_pool.h: parallel_rows covers every row exactly once for any thread count,
// really runs on several threads, honours set_thread_count, refuses bad counts, and survives
// concurrent and nested callers.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "runtime/error.h"
#include "runtime/thread_pool.h"

namespace {

struct Coverage {
  int64_t wrong_rows = 0;  // rows visited other than exactly once
  int parts = 0;           // body calls
  std::set<std::thread::id> threads;
};

Coverage cover(int64_t count, int64_t min_rows) {
  std::vector<std::atomic<int>> hits(static_cast<std::size_t>(std::max<int64_t>(count, 0)));
  Coverage c;
  std::mutex m;
  ae::parallel_rows(count, min_rows, [&](int64_t begin, int64_t end) {
    {
      std::lock_guard<std::mutex> lock(m);
      ++c.parts;
      c.threads.insert(std::this_thread::get_id());
    }
    for (int64_t i = begin; i < end; ++i) hits[static_cast<std::size_t>(i)]++;
  });
  for (const auto& h : hits) c.wrong_rows += h.load() != 1;
  return c;
}

// Restores the thread count when a test case ends, however it ends.
struct ThreadCountGuard {
  int saved = ae::thread_count();
  ~ThreadCountGuard() { ae::set_thread_count(saved); }
};

}  // namespace

TEST_CASE("parallel_rows splits into at most thread_count parts on distinct threads") {
  ThreadCountGuard guard;
  for (int threads : {1, 2, 3, 5}) {
    CAPTURE(threads);
    ae::set_thread_count(threads);
    CHECK(ae::thread_count() == threads);
    const Coverage c = cover(1000, 1);
    CHECK(c.wrong_rows == 0);
    // Nobody else uses the pool in this test, so the job gets exactly `threads` parts.
    CHECK(c.parts == threads);
    CHECK(static_cast<int>(c.threads.size()) == threads);
  }
}

TEST_CASE("parallel_rows: small counts run inline, odd counts split exactly") {
  ThreadCountGuard guard;
  ae::set_thread_count(4);
  Coverage c = cover(10, 6);  // fewer than 2 * min_rows: one inline call
  CHECK(c.wrong_rows == 0);
  CHECK(c.parts == 1);
  CHECK(c.threads.count(std::this_thread::get_id()) == 1);
  c = cover(0, 1);
  CHECK(c.parts == 0);
  c = cover(-5, 1);
  CHECK(c.parts == 0);
  c = cover(3, 1);  // fewer rows than threads: one row per part
  CHECK(c.wrong_rows == 0);
  CHECK(c.parts == 3);
  c = cover(1001, 250);  // by size: 4 parts
  CHECK(c.wrong_rows == 0);
  CHECK(c.parts == 4);
  c = cover(1001, 0);  // a zero minimum means 1
  CHECK(c.wrong_rows == 0);
}

TEST_CASE("set_thread_count refuses counts outside [1, kMaxThreads]") {
  ThreadCountGuard guard;
  CHECK_THROWS_AS(ae::set_thread_count(0), ae::Error);
  CHECK_THROWS_AS(ae::set_thread_count(-3), ae::Error);
  CHECK_THROWS_AS(ae::set_thread_count(ae::kMaxThreads + 1), ae::Error);
  CHECK(ae::thread_count() == guard.saved);
}

TEST_CASE("parallel_rows from concurrent and nested callers covers every row once") {
  ThreadCountGuard guard;
  ae::set_thread_count(3);
  std::atomic<int64_t> wrong{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&] {
      for (int rep = 0; rep < 50; ++rep) wrong += cover(777, 1).wrong_rows;
    });
  for (auto& t : callers) t.join();
  CHECK(wrong.load() == 0);

  // A body that itself calls parallel_rows: the inner call finds the pool busy and runs inline.
  std::vector<std::atomic<int>> hits(100 * 50);
  ae::parallel_rows(100, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      ae::parallel_rows(50, 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[static_cast<std::size_t>(r * 50 + i)]++;
      });
  });
  int64_t wrong_nested = 0;
  for (const auto& h : hits) wrong_nested += h.load() != 1;
  CHECK(wrong_nested == 0);
}
