// Properties of the emulated device itself: a missing __syncthreads is caught by the randomised
// thread order, scheduling is reproducible per seed, shared memory starts poisoned, and misuse
// (bad warp masks, deadlocks, impossible launches) is a clear ae::Error. On a real GPU these
// checks have no meaning, so the gpu-real/ variant of this binary reports Skipped.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "tests/gpu/device_features.h"
#include "tests/gpu/gpu_harness.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

#if defined(AE_EMULATED_DEVICE)
#include "kernels/cuda/launch.h"
#include "runtime/tensor.h"

using namespace ae::gputest;
using ae::test::error_of;

namespace {

std::vector<float> ones_and_twos(std::size_t n) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<float>(1 + i % 2);
  return v;
}

__global__ void read_unwritten_shared_kernel(float* out) {
  AE_SHARED(float, scratch, 64);
  out[threadIdx.x] = scratch[threadIdx.x];
}

__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x == 1) {
    __syncthreads();
  } else {
    __syncwarp();
  }
  out[threadIdx.x] = 1;
}

__global__ void huge_static_shared_kernel(float* out) {
  AE_SHARED(float, big, 13000);  // 52 KB > 48 KB
  big[threadIdx.x] = 1.0f;
  out[threadIdx.x] = big[threadIdx.x];
}

// Four warps take kSteps warp-synchronous steps; at each step lane 0 publishes its warp's progress
// and records how many steps ahead of the slowest other warp it is. Warps that may drift apart
// between block barriers (as on a GPU) show lags above 1; warps run in lockstep never do.
constexpr int kSteps = 16;
__global__ void warp_drift_kernel(int* max_lag) {
  AE_SHARED(int, progress, 4);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  if (lane == 0) progress[warp] = 0;
  __syncthreads();
  int lag = 0;
  for (int step = 1; step <= kSteps; ++step) {
    if (lane == 0) {
      progress[warp] = step;
      for (int other = 0; other < 4; ++other) lag = std::max(lag, step - progress[other]);
    }
    __syncwarp();
  }
  if (lane == 0) max_lag[warp] = lag;
}

// Back-to-back warp exchanges with nothing between them: whole-warp shuffles and ballots (which
// alternate between two slot banks and sync once, kernels/emu/scheduler.h) and, every third step,
// a shuffle among 8 lanes (a third bank, synced twice). Between two exchanges a lane may run a whole
// exchange ahead of a slower one, so a bank reused one exchange too early hands the slow lane a
// value of the wrong step. Block of 48 threads: the second warp has 16 lanes, its whole mask 0xFFFF.
constexpr int kExchangeSteps = 48;
__global__ void back_to_back_exchanges_kernel(unsigned* out) {
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const unsigned lanes = warp == 0 ? 32u : blockDim.x - 32u;
  const unsigned whole = lanes == 32 ? 0xFFFFFFFFu : (1u << lanes) - 1u;
  unsigned v = lane * 7u + 1u + 1000u * warp;
  for (int step = 0; step < kExchangeSteps; ++step) {
    v = __shfl_sync(whole, v, static_cast<int>((lane + static_cast<unsigned>(step)) % lanes)) * 3u +
        static_cast<unsigned>(step);
    if (step % 3 == 0 && lane < 8) v = __shfl_xor_sync(0xFFu, v, 3);
    v ^= __ballot_sync(whole, v & 1u) >> (lane % 16);
  }
  out[threadIdx.x] = v;
}

// The same on the host, warp by warp.
std::vector<unsigned> back_to_back_exchanges_expected(int threads) {
  std::vector<unsigned> out;
  for (int warp = 0; warp * 32 < threads; ++warp) {
    const int lanes = std::min(32, threads - warp * 32);
    std::vector<unsigned> v(static_cast<std::size_t>(lanes)), next(v.size());
    for (int l = 0; l < lanes; ++l) v[l] = static_cast<unsigned>(l) * 7u + 1u + 1000u * static_cast<unsigned>(warp);
    for (int step = 0; step < kExchangeSteps; ++step) {
      for (int l = 0; l < lanes; ++l) next[l] = v[(l + step) % lanes] * 3u + static_cast<unsigned>(step);
      v = next;
      if (step % 3 == 0) {
        for (int l = 0; l < 8; ++l) next[l] = v[l ^ 3];
        v = next;
      }
      unsigned ballot = 0;
      for (int l = 0; l < lanes; ++l) ballot |= (v[l] & 1u) << l;
      for (int l = 0; l < lanes; ++l) v[l] ^= ballot >> (l % 16);
    }
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

}  // namespace

TEST_CASE("warps drift apart between block barriers, so warp-synchronous code is not run in lockstep") {
  AE_GPU_TEST_PRELUDE();
  ae::Tensor lags = ae::Tensor::zeros({4 * 4}, ae::DType::u8, device());
  int largest = 0;
  for (int launch = 0; launch < 4; ++launch) {
    AE_LAUNCH(warp_drift_kernel, dim3(1), dim3(128), 0, nullptr, reinterpret_cast<int*>(lags.data<uint8_t>()));
    const ae::Tensor host = lags.to(ae::Device::cpu());
    int values[4];
    std::memcpy(values, host.raw(), sizeof(values));
    for (int v : values) largest = std::max(largest, v);
  }
  MESSAGE("largest lead of one warp over another: " << largest << " steps");
  CHECK(largest >= 2);
  require_guards_intact();
}

TEST_CASE("back-to-back warp exchanges give every lane its own step's values, whatever the lanes' order") {
  AE_GPU_TEST_PRELUDE();
  constexpr int kThreads = 48;
  const std::vector<unsigned> expected = back_to_back_exchanges_expected(kThreads);
  const uint64_t saved = ae::emu::seed();
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    INFO("seed " << seed);
    ae::emu::set_seed(seed);
    ae::Tensor out = ae::Tensor::zeros({kThreads * 4}, ae::DType::u8, device());
    AE_LAUNCH(back_to_back_exchanges_kernel, dim3(2), dim3(kThreads), 0, nullptr,
              reinterpret_cast<unsigned*>(out.data<uint8_t>()));
    const ae::Tensor host = out.to(ae::Device::cpu());
    std::vector<unsigned> got(kThreads);
    std::memcpy(got.data(), host.raw(), sizeof(unsigned) * kThreads);
    CHECK(got == expected);
  }
  ae::emu::set_seed(saved);
  require_guards_intact();
}

TEST_CASE("a missing __syncthreads gives a wrong result for some scheduling seed") {
  AE_GPU_TEST_PRELUDE();
  const std::vector<float> x = ones_and_twos(256 * 4);
  const uint64_t saved = ae::emu::seed();
  int wrong = 0;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    ae::emu::set_seed(seed);
    const std::vector<float> good = shared_tree_block_sums(x, 256, false);
    for (float s : good) REQUIRE(s == 384.0f);
    const std::vector<float> bad = shared_tree_block_sums(x, 256, true);
    for (float s : bad) {
      if (s != 384.0f) ++wrong;
    }
  }
  ae::emu::set_seed(saved);
  MESSAGE(wrong << " of 24 block sums wrong without barriers");
  CHECK(wrong > 0);
  require_guards_intact();
}

TEST_CASE("the same seed gives the same interleaving") {
  AE_GPU_TEST_PRELUDE();
  const std::vector<float> x = ones_and_twos(128 * 8);
  const uint64_t saved = ae::emu::seed();
  ae::emu::set_seed(42);
  const std::vector<float> first = shared_tree_block_sums(x, 128, true);
  ae::emu::set_seed(42);
  const std::vector<float> second = shared_tree_block_sums(x, 128, true);
  ae::emu::set_seed(saved);
  REQUIRE(first.size() == second.size());
  CHECK(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)) == 0);
}

TEST_CASE("static shared memory starts poisoned with NaN") {
  AE_GPU_TEST_PRELUDE();
  ae::Tensor out = ae::Tensor::zeros({64}, ae::DType::f32, device());
  AE_LAUNCH(read_unwritten_shared_kernel, dim3(3), dim3(64), 0, nullptr, out.f32());
  for (float v : out.to_vector()) CHECK(std::isnan(v));
}

TEST_CASE("misuse of the device is a clear error, not a hang or a crash") {
  AE_GPU_TEST_PRELUDE();
  const std::string mask = error_of([] { shuffle_with_full_mask_in_partial_warp(40); });
  CHECK(mask.find("bad_mask_kernel") != std::string::npos);
  CHECK(mask.find("names lanes outside the block") != std::string::npos);

  ae::Tensor out = ae::Tensor::zeros({64}, ae::DType::f32, device());
  ae::Tensor ints = ae::Tensor::zeros({64}, ae::DType::i64, device());
  const std::string deadlock = error_of([&] {
    AE_LAUNCH(divergent_barrier_kernel, dim3(1), dim3(32), 0, nullptr, reinterpret_cast<int*>(ints.raw()));
  });
  CHECK(deadlock.find("deadlock in kernel divergent_barrier_kernel") != std::string::npos);

  const std::string too_big = error_of(
      [&] { AE_LAUNCH(huge_static_shared_kernel, dim3(1), dim3(32), 0, nullptr, out.f32()); });
  CHECK(too_big.find("static shared memory exceeds") != std::string::npos);

  const std::string block = error_of(
      [&] { AE_LAUNCH(read_unwritten_shared_kernel, dim3(1), dim3(1025), 0, nullptr, out.f32()); });
  CHECK(block.find("1..1024 threads") != std::string::npos);
  CHECK(block.find("test_emulator.cpp") != std::string::npos);  // the call site is named

  const std::string smem = error_of(
      [&] { AE_LAUNCH(read_unwritten_shared_kernel, dim3(1), dim3(32), 200 * 1024, nullptr, out.f32()); });
  CHECK(smem.find("dynamic shared memory") != std::string::npos);
  require_guards_intact();
}

#else

TEST_CASE("emulator properties (emulated device only)") {
  ae::test::skip_binary("these checks are about the emulated device; this binary runs on a real GPU");
}

#endif
