// runtime/thread_pool.h: parallel_rows covers every row exactly once for any thread count,
// really runs on several threads at once, honours set_thread_count, refuses bad counts, and
// survives back-to-back jobs and concurrent and nested callers.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
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

TEST_CASE("parallel_rows covers every row once for any thread count, on at most thread_count threads") {
  ThreadCountGuard guard;
  for (int threads : {1, 2, 3, 5}) {
    CAPTURE(threads);
    ae::set_thread_count(threads);
    CHECK(ae::thread_count() == threads);
    for (int64_t count : {1, 2, 7, 1000, 100003}) {
      CAPTURE(count);
      const Coverage c = cover(count, 1);
      CHECK(c.wrong_rows == 0);
      CHECK(c.parts >= 1);
      CHECK(c.parts <= std::min<int64_t>(count, 4 * threads));  // a few chunks per thread
      CHECK(static_cast<int>(c.threads.size()) <= threads);
    }
  }
  ae::set_thread_count(1);
  const Coverage one = cover(1000, 1);
  CHECK(one.parts == 1);  // a single thread runs the loop inline, in one call
  CHECK(one.threads.count(std::this_thread::get_id()) == 1);
}

TEST_CASE("parallel_rows really runs thread_count threads at once") {
  // Every body call waits (up to a generous timeout) until `threads` distinct threads are
  // inside the loop at the same time, which only happens if the workers take part.
  ThreadCountGuard guard;
  for (int threads : {2, 3}) {
    CAPTURE(threads);
    ae::set_thread_count(threads);
    std::mutex m;
    std::condition_variable all_in;
    std::set<std::thread::id> inside;
    bool met = false;
    ae::parallel_rows(1000, 1, [&](int64_t, int64_t) {
      std::unique_lock<std::mutex> lock(m);
      inside.insert(std::this_thread::get_id());
      if (static_cast<int>(inside.size()) == threads) {
        met = true;
        all_in.notify_all();
      }
      all_in.wait_for(lock, std::chrono::seconds(20), [&] { return met; });
    });
    CHECK(met);
  }
}

TEST_CASE("parallel_rows: many tiny jobs back to back (late workers must not run a finished job)") {
  ThreadCountGuard guard;
  ae::set_thread_count(3);
  int64_t wrong = 0;
  for (int rep = 0; rep < 20000; ++rep) wrong += cover(1 + rep % 9, 1).wrong_rows;
  CHECK(wrong == 0);
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
  c = cover(3, 1);  // fewer rows than threads: at most one row per part
  CHECK(c.wrong_rows == 0);
  CHECK(c.parts <= 3);
  c = cover(1001, 250);  // parts of at least 250 rows: at most 4
  CHECK(c.wrong_rows == 0);
  CHECK(c.parts <= 4);
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
