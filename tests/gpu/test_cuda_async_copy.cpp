// The cp.async and ldmatrix wrappers of kernels/cuda/mma.h against layouts written out by hand from
// the PTX ISA, on the emulated device (and on a GPU for the gpu-real variant, where only what the
// hardware guarantees is checked: the emulator's poison before a wait and its leak reports are
// checked on the emulator only).
//   ldmatrix: lane l receives, in register j, bytes 4(l%4)..+3 of row l/4 of matrix j, whose row
//             addresses lanes 8j..8j+7 give; and with the conv kernel's addressing that is exactly
//             the mma.m16n8k8 tf32 A fragment and the B fragments of two n8 tiles.
//   cp.async: data only after the covering wait (poison before), zero-fill past src-size, groups
//             completing oldest first, uncommitted copies not covered by wait_group, wait_all
//             committing them, a missing wait before a barrier read, a thread exiting with copies
//             outstanding.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "tests/gpu/async_copy_kernels.h"
#include "tests/gpu/gpu_harness.h"
#if defined(AE_EMULATED_DEVICE)
#include "kernels/emu/async_copy.h"
#endif

using namespace ae;
using namespace ae::gputest;

namespace {

constexpr uint32_t kPoison = 0xFFFFFFFFu;  // the emulator's "copy not landed yet"

std::vector<uint32_t> numbered_words(int n, uint32_t base) {
  std::vector<uint32_t> w(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) w[static_cast<std::size_t>(i)] = base + 0x10001u * static_cast<uint32_t>(i);
  return w;
}

std::string leaks() {
#if defined(AE_EMULATED_DEVICE)
  return emu::async_copy_take_leaks();
#else
  return {};
#endif
}

}  // namespace

TEST_CASE("ldmatrix .x1/.x2/.x4: lane l gets word l%4 of row l/4 of each matrix, rows addressed by lanes 8j..8j+7") {
  AE_GPU_TEST_PRELUDE();
  const std::vector<uint32_t> words = numbered_words(256, 0xA0000000u);
  // Hand-picked spot checks with contiguous rows (lane l addresses word 4l): matrix j is words
  // 32j..32j+31, so lane 5 reads row 1 word 1 of each, lane 31 row 7 word 3.
  std::vector<int> rows(32);
  for (int l = 0; l < 32; ++l) rows[static_cast<std::size_t>(l)] = 4 * l;
  const std::vector<uint32_t> x4 = ldmatrix_words(words, rows, 4);
  CHECK(x4[5 * 4 + 0] == words[5]);
  CHECK(x4[5 * 4 + 3] == words[96 + 5]);
  CHECK(x4[31 * 4 + 2] == words[64 + 31]);
  CHECK(x4[0 * 4 + 1] == words[32]);
  // Scattered rows (a permutation of 64 row slots, 16-byte aligned): every lane and register.
  for (int i = 0; i < 32; ++i) rows[static_cast<std::size_t>(i)] = 4 * ((i * 37 + 11) % 64);
  for (int matrices : {1, 2, 4}) {
    INFO("x" << matrices);
    const std::vector<uint32_t> got = ldmatrix_words(words, rows, matrices);
    int mismatches = 0;
    for (int l = 0; l < 32; ++l) {
      for (int j = 0; j < matrices; ++j) {
        const int row_address = rows[static_cast<std::size_t>(8 * j + l / 4)];
        const uint32_t want = words[static_cast<std::size_t>(row_address + l % 4)];
        mismatches += got[static_cast<std::size_t>(l * matrices + j)] != want;
      }
    }
    CHECK(mismatches == 0);
  }
}

TEST_CASE("ldmatrix.x4 with the conv kernel's addressing yields the mma.m16n8k8 tf32 A and B fragments") {
  AE_GPU_TEST_PRELUDE();
  // A: 16 rows x 8 words (tf32 elements), row-major, word (r, c) at 8r + c. Kernel addressing:
  // lane l -> row l%8 + 8((l/8) & 1), word 4((l/8) >> 1). PTX fragment: a0 (g, tig), a1 (g+8, tig),
  // a2 (g, tig+4), a3 (g+8, tig+4) with g = lane/4, tig = lane%4.
  const std::vector<uint32_t> tile = numbered_words(128, 0x3F000000u);
  std::vector<int> rows(32);
  for (int l = 0; l < 32; ++l) {
    const int j = l / 8, i = l % 8;
    rows[static_cast<std::size_t>(l)] = 8 * (i + 8 * (j & 1)) + 4 * (j >> 1);
  }
  const std::vector<uint32_t> a = ldmatrix_words(tile, rows, 4);
  const int a_row[4] = {0, 8, 0, 8}, a_col[4] = {0, 0, 4, 4};
  int bad_a = 0;
  for (int l = 0; l < 32; ++l) {
    for (int q = 0; q < 4; ++q) {
      const int r = l / 4 + a_row[q], c = l % 4 + a_col[q];
      bad_a += a[static_cast<std::size_t>(4 * l + q)] != tile[static_cast<std::size_t>(8 * r + c)];
    }
  }
  CHECK(bad_a == 0);
  // B stored [n][k]: 16 n x 8 k words. Kernel addressing: row l%8 + 8((l/8) >> 1), word
  // 4((l/8) & 1). PTX: b0 (k = tig, n = g), b1 (k = tig + 4, n = g); registers 2, 3 are the
  // next n8 tile (n + 8).
  for (int l = 0; l < 32; ++l) {
    const int j = l / 8, i = l % 8;
    rows[static_cast<std::size_t>(l)] = 8 * (i + 8 * (j >> 1)) + 4 * (j & 1);
  }
  const std::vector<uint32_t> b = ldmatrix_words(tile, rows, 4);
  const int b_n[4] = {0, 0, 8, 8}, b_k[4] = {0, 4, 0, 4};
  int bad_b = 0;
  for (int l = 0; l < 32; ++l) {
    for (int q = 0; q < 4; ++q) {
      const int n = l / 4 + b_n[q], k = l % 4 + b_k[q];
      bad_b += b[static_cast<std::size_t>(4 * l + q)] != tile[static_cast<std::size_t>(8 * n + k)];
    }
  }
  CHECK(bad_b == 0);
}

TEST_CASE("cp.async.cg 16 bytes: zero-fill past src-size, data only after the wait") {
  AE_GPU_TEST_PRELUDE();
  const int threads = 40;  // a partial second warp
  const std::vector<uint32_t> src = numbered_words(4 * threads, 0x40000000u);
  std::vector<int> src_bytes(threads);
  for (int t = 0; t < threads; ++t) src_bytes[static_cast<std::size_t>(t)] = 4 * (t % 5);  // 0, 4, 8, 12, 16
  for (bool wait_all : {false, true}) {
    INFO((wait_all ? "wait_all" : "wait_group 0"));
    const CopySnapshots s = cp_async_16(src, src_bytes, wait_all);
    int bad_after = 0, unpoisoned_before = 0;
    for (int t = 0; t < threads; ++t) {
      for (int i = 0; i < 4; ++i) {
        const std::size_t at = static_cast<std::size_t>(4 * t + i);
        const uint32_t want = 4 * i < src_bytes[static_cast<std::size_t>(t)] ? src[at] : 0u;
        bad_after += s.after_wait[at] != want;
        unpoisoned_before += s.before_wait[at] != kPoison;
      }
    }
    CHECK(bad_after == 0);
    if (emulated()) CHECK(unpoisoned_before == 0);  // a read before the wait sees NaN
  }
  CHECK(leaks().empty());
}

TEST_CASE("cp.async.ca 4 and 8 bytes: zero-fill, and the words past the copy are untouched") {
  AE_GPU_TEST_PRELUDE();
  const int threads = 33;
  const std::vector<uint32_t> src = numbered_words(4 * threads, 0x50000000u);
  for (int bytes : {4, 8}) {
    INFO(bytes << " bytes");
    std::vector<int> src_bytes(threads);
    for (int t = 0; t < threads; ++t) src_bytes[static_cast<std::size_t>(t)] = t % 3 == 0 ? 0 : (t % 3 == 1 ? bytes : 4);
    const CopySnapshots s = cp_async_ca(src, src_bytes, bytes);
    int bad = 0;
    for (int t = 0; t < threads; ++t) {
      for (int i = 0; i < 4; ++i) {
        const std::size_t at = static_cast<std::size_t>(4 * t + i);
        const uint32_t want =
            4 * i >= bytes ? 0x12345678u : (4 * i < src_bytes[static_cast<std::size_t>(t)] ? src[at] : 0u);
        bad += s.after_wait[at] != want;
      }
    }
    CHECK(bad == 0);
  }
  CHECK(leaks().empty());
}

TEST_CASE("cp.async groups complete oldest first; wait_group does not cover uncommitted copies, wait_all does") {
  AE_GPU_TEST_PRELUDE();
  const std::vector<uint32_t> src = numbered_words(4 * 4 * 32, 0x60000000u);  // [destination][thread][4]
  const GroupSnapshots s = cp_async_groups(src);
  // After wait_group 2, 1, 0 and wait_all: destinations 0..(landed-1) hold their data.
  const int landed[4] = {1, 2, 3, 4};
  const int outstanding[4] = {2, 1, 0, 0};
  int missing = 0, early = 0, bad_counts = 0;
  for (int t = 0; t < 32; ++t) {
    for (int wait = 0; wait < 4; ++wait) {
      for (int d = 0; d < 4; ++d) {
        for (int i = 0; i < 4; ++i) {
          const uint32_t got = s.words[static_cast<std::size_t>(((t * 4 + wait) * 4 + d) * 4 + i)];
          const uint32_t want = src[static_cast<std::size_t>(4 * (d * 32 + t) + i)];
          if (d < landed[wait]) {
            missing += got != want;
          } else {
            early += got != kPoison;
          }
        }
      }
      if (emulated()) bad_counts += s.outstanding[static_cast<std::size_t>(t * 4 + wait)] != outstanding[wait];
    }
  }
  CHECK(missing == 0);
  if (emulated()) {
    CHECK(early == 0);  // groups not yet waited for are still poison
    CHECK(bad_counts == 0);
  }
  CHECK(leaks().empty());
}

TEST_CASE("cp.async: a barrier without the wait does not publish the copy (emulator: the reader sees NaN)") {
  AE_GPU_TEST_PRELUDE();
  const int threads = 64;
  const std::vector<uint32_t> src = numbered_words(4 * threads, 0x70000000u);
  const std::vector<uint32_t> good = cp_async_neighbour_read(src, threads, true);
  int bad = 0;
  for (int t = 0; t < threads; ++t) {
    for (int i = 0; i < 4; ++i) {
      bad += good[static_cast<std::size_t>(4 * t + i)] != src[static_cast<std::size_t>(4 * ((t + 1) % threads) + i)];
    }
  }
  CHECK(bad == 0);
  if (emulated()) {
    const std::vector<uint32_t> racy = cp_async_neighbour_read(src, threads, false);
    int poisoned = 0;
    for (const uint32_t w : racy) poisoned += w == kPoison;
    CHECK(poisoned == 4 * threads);
  }
  CHECK(leaks().empty());
}

#if defined(AE_EMULATED_DEVICE)
TEST_CASE("emulator: a thread that exits with cp.async copies outstanding is reported") {
  AE_GPU_TEST_PRELUDE();
  const emu::AsyncCopyStats before = emu::async_copy_stats();
  cp_async_exit_without_wait(1);  // the last block leaks: found by the check between launches
  const std::string one = leaks();
  CHECK(one.find("block (0,0,0) thread 0 ended with 1 cp.async copies outstanding") != std::string::npos);
  CHECK(one.find("thread 31 ended") != std::string::npos);
  CHECK(emu::async_copy_stats().issued - before.issued == 32);
  CHECK(emu::async_copy_stats().completed == before.completed);
  // Block 0 leaks, and block 1's first cp.async reports it.
  CHECK_THROWS_WITH_AS(cp_async_exit_without_wait(2), doctest::Contains("a thread ended with cp.async copies outstanding"),
                       Error);
  (void)leaks();
  CHECK(leaks().empty());
}
#endif
