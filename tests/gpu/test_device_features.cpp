// Device features against scalar references: barriers and shared memory, warp shuffles and
// votes, atomics, dynamic shared memory, the tf32 and bf16 mma wrappers and their operand conversions. The same tests run on the emulated
// device (gpu/...) and on a real GPU (gpu-real/...), which checks the emulation against hardware.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "tests/gpu/device_features.h"
#include "tests/gpu/gpu_harness.h"

using namespace ae::gputest;

namespace {

std::vector<float> random_values(std::size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// cvt.rna.tf32.f32 written from the PTX ISA's definition, independently of kernels/cuda/mma.h.
uint32_t tf32_reference(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if (std::isnan(x)) return 0x7FFFE000u;
  if (std::isinf(x)) return u;
  const uint32_t sign = u & 0x80000000u;
  const uint32_t mag = u & 0x7FFFFFFFu;
  const uint32_t low = mag & 0x1FFFu;
  uint32_t rounded = mag & ~0x1FFFu;
  if (low >= 0x1000u) rounded += 0x2000u;  // nearest, ties away from zero
  return sign | rounded;
}

float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The nearest bfloat16 to x, ties to the even significand (cvt.rn.bf16.f32), found by comparing
// the distances to the two bf16 neighbours in double, independently of mma.h's bit trick. The
// neighbour above the largest finite bf16 is infinity, reached from 2^128 - 2^119 on (IEEE
// overflow under round to nearest).
uint16_t bf16_reference(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if (std::isnan(x)) return 0x7FFFu;
  if (std::isinf(x)) return static_cast<uint16_t>(u >> 16);
  const uint32_t sign = u & 0x80000000u;
  const uint32_t down = (u & 0x7FFFFFFFu) & 0xFFFF0000u, up = down + 0x10000u;
  const double mag = std::fabs(static_cast<double>(x));
  const double down_value = bits_to_float(down);
  const double up_value = up >= 0x7F800000u ? std::ldexp(1.0, 128) : static_cast<double>(bits_to_float(up));
  uint32_t pick = down;
  if (mag - down_value > up_value - mag || (mag - down_value == up_value - mag && (down >> 16 & 1u))) pick = up;
  return static_cast<uint16_t>((sign | pick) >> 16);
}

float bf16_value(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

}  // namespace

TEST_CASE("a shared-memory tree reduction with barriers sums every block") {
  AE_GPU_TEST_PRELUDE();
  for (int threads : {32, 64, 256, 512}) {
    const std::vector<float> x = random_values(static_cast<std::size_t>(threads) * 5, 11);
    const std::vector<float> sums = shared_tree_block_sums(x, threads, false);
    REQUIRE(sums.size() == 5);
    for (int b = 0; b < 5; ++b) {
      double ref = 0;
      for (int t = 0; t < threads; ++t) ref += x[static_cast<std::size_t>(b * threads + t)];
      INFO("threads " << threads << " block " << b);
      CHECK(sums[static_cast<std::size_t>(b)] == doctest::Approx(ref).epsilon(1e-5));
    }
  }
  require_guards_intact();
}

TEST_CASE("block_sum (warp shuffles + one warp) is exact for integers and deterministic") {
  AE_GPU_TEST_PRELUDE();
  for (int threads : {32, 96, 256, 1024}) {
    std::vector<float> x(static_cast<std::size_t>(threads) * 3);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 17) - 5.0f;
    const std::vector<double> sums = shuffle_block_sums(x, threads);
    for (int b = 0; b < 3; ++b) {
      double ref = 0;
      for (int t = 0; t < threads; ++t) ref += x[static_cast<std::size_t>(b * threads + t)];
      INFO("threads " << threads << " block " << b);
      CHECK(sums[static_cast<std::size_t>(b)] == ref);
    }
    const std::vector<float> y = random_values(static_cast<std::size_t>(threads) * 2, 5);
    CHECK(shuffle_block_sums(y, threads) == shuffle_block_sums(y, threads));
  }
  require_guards_intact();
}

TEST_CASE("warp shuffles follow CUDA's source-lane rules, including widths below 32") {
  AE_GPU_TEST_PRELUDE();
  struct Case {
    Shuffle kind;
    int arg, width;
  };
  const Case cases[] = {{Shuffle::index, 0, 32}, {Shuffle::index, 5, 32}, {Shuffle::index, 37, 32},
                        {Shuffle::index, 3, 8},  {Shuffle::down, 1, 32},  {Shuffle::down, 16, 32},
                        {Shuffle::down, 3, 8},   {Shuffle::up, 1, 32},    {Shuffle::up, 4, 16},
                        {Shuffle::xor_, 1, 32},  {Shuffle::xor_, 31, 32}, {Shuffle::xor_, 2, 4},
                        {Shuffle::xor_, 8, 8}};
  const int threads = 96;
  for (const Case& c : cases) {
    const std::vector<int> got = shuffle_results(c.kind, c.arg, c.width, threads);
    for (int t = 0; t < threads; ++t) {
      const int warp_base = t / 32 * 32, lane = t % 32;
      const int base = lane / c.width * c.width;
      int src = lane;
      switch (c.kind) {
        case Shuffle::index: src = base + c.arg % c.width; break;
        case Shuffle::down: src = lane % c.width + c.arg < c.width ? lane + c.arg : lane; break;
        case Shuffle::up: src = lane % c.width >= c.arg ? lane - c.arg : lane; break;
        case Shuffle::xor_: src = (lane ^ c.arg) >= base + c.width ? lane : lane ^ c.arg; break;
      }
      INFO("kind " << static_cast<int>(c.kind) << " arg " << c.arg << " width " << c.width << " thread " << t);
      REQUIRE(got[static_cast<std::size_t>(t)] == 1000 * (warp_base + src) + 7);
    }
  }
  require_guards_intact();
}

TEST_CASE("ballot, any and all see every lane's predicate") {
  AE_GPU_TEST_PRELUDE();
  for (int modulus : {1, 3, 32, 40}) {
    const int threads = 64;
    const std::vector<uint64_t> got = ballot_results(modulus, threads);
    for (int t = 0; t < threads; ++t) {
      const int warp_base = t / 32 * 32;
      uint32_t bits = 0;
      for (int l = 0; l < 32; ++l) {
        if ((warp_base + l) % modulus == 0) bits |= 1u << l;
      }
      const uint64_t expected = bits | uint64_t{bits != 0} << 32 | uint64_t{bits == 0xFFFFFFFFu} << 33;
      INFO("modulus " << modulus << " thread " << t);
      REQUIRE(got[static_cast<std::size_t>(t)] == expected);
    }
  }
  require_guards_intact();
}

TEST_CASE("atomicAdd counts every thread, for int and float") {
  AE_GPU_TEST_PRELUDE();
  for (int64_t n : {1, 127, 1000, 4099}) {
    const AtomicCounts r = atomic_counts(n, 0.5f);
    CHECK(r.count == n);
    CHECK(r.sum == 0.5f * static_cast<float>(n));  // multiples of 0.5 up to 2050 are exact
  }
  require_guards_intact();
}

TEST_CASE("dynamic shared memory is per block and sized at launch") {
  AE_GPU_TEST_PRELUDE();
  for (int threads : {1, 33, 128, 1024}) {
    const std::vector<float> x = random_values(static_cast<std::size_t>(threads) * 3, 3);
    const std::vector<float> y = reverse_blocks_dynamic_shared(x, threads);
    for (int b = 0; b < 3; ++b) {
      for (int t = 0; t < threads; ++t) {
        INFO("threads " << threads << " block " << b << " t " << t);
        REQUIRE(y[static_cast<std::size_t>(b * threads + t)] == x[static_cast<std::size_t>(b * threads + threads - 1 - t)]);
      }
    }
  }
  require_guards_intact();
}

TEST_CASE("to_tf32 rounds to nearest with ties away from zero (cvt.rna.tf32.f32)") {
  AE_GPU_TEST_PRELUDE();
  std::vector<float> x = random_values(1000, 9);
  for (uint32_t bits : {0x3F800000u, 0x3F801000u, 0xBF801000u, 0x3F800FFFu, 0x3F803000u, 0x00000001u, 0x7F7FFFFFu,
                        0x7F800000u, 0xFF800000u, 0x00000000u, 0x80000000u}) {
    x.push_back(bits_to_float(bits));
  }
  const std::vector<uint32_t> got = to_tf32_bits(x);
  for (std::size_t i = 0; i < x.size(); ++i) {
    uint32_t in;
    std::memcpy(&in, &x[i], 4);
    INFO("input bits 0x" << std::hex << in);
    REQUIRE(got[i] == tf32_reference(x[i]));
  }
  require_guards_intact();
}

TEST_CASE("mma.sync m16n8k8 tf32 matches a scalar matmul of the tf32-rounded operands") {
  AE_GPU_TEST_PRELUDE();
  for (uint32_t seed : {1u, 2u, 3u}) {
    const std::vector<float> a = random_values(16 * 8, seed), b = random_values(8 * 8, seed + 100),
                             c = random_values(16 * 8, seed + 200);
    const std::vector<float> d = mma_m16n8k8_tf32(a, b, c);
    for (int r = 0; r < 16; ++r) {
      for (int col = 0; col < 8; ++col) {
        double ref = c[static_cast<std::size_t>(r * 8 + col)];
        for (int k = 0; k < 8; ++k) {
          ref += static_cast<double>(bits_to_float(tf32_reference(a[static_cast<std::size_t>(r * 8 + k)]))) *
                 bits_to_float(tf32_reference(b[static_cast<std::size_t>(k * 8 + col)]));
        }
        INFO("seed " << seed << " D[" << r << "][" << col << "]");
        REQUIRE(d[static_cast<std::size_t>(r * 8 + col)] == doctest::Approx(ref).epsilon(1e-5).scale(1.0));
      }
    }
  }
  // One-hot operands pin the layout: A = e(r,k), B = e(k,c) gives D = e(r,c) exactly.
  for (int r : {0, 7, 8, 15}) {
    for (int k : {0, 3, 4, 7}) {
      for (int col : {0, 5, 7}) {
        std::vector<float> a(128, 0.0f), b(64, 0.0f), c(128, 0.0f);
        a[static_cast<std::size_t>(r * 8 + k)] = 1.0f;
        b[static_cast<std::size_t>(k * 8 + col)] = 2.0f;
        const std::vector<float> d = mma_m16n8k8_tf32(a, b, c);
        for (int i = 0; i < 128; ++i) {
          INFO("r " << r << " k " << k << " c " << col << " element " << i);
          REQUIRE(d[static_cast<std::size_t>(i)] == (i == r * 8 + col ? 2.0f : 0.0f));
        }
      }
    }
  }
  require_guards_intact();
}

TEST_CASE("pack_bf16x2 rounds to nearest even (cvt.rn.bf16x2.f32), first element in the low half") {
  AE_GPU_TEST_PRELUDE();
  std::vector<float> lo = random_values(1000, 21), hi = random_values(1000, 22);
  // 1, ties to even down / up, just above a tie, a negative tie, the largest finite bf16, overflow
  // to infinity, subnormals (rounded, not flushed) including ties, infinities, zeros.
  const uint32_t specials[] = {0x3F800000u, 0x3F808000u, 0x3F818000u, 0x3F808001u, 0xBF808000u, 0x7F7F7FFFu,
                               0x7F7F8000u, 0x7F7FFFFFu, 0xFF7FFFFFu, 0x00000001u, 0x00008000u, 0x00018000u,
                               0x8000FFFFu, 0x7F800000u, 0xFF800000u, 0x00000000u, 0x80000000u};
  for (uint32_t bits : specials) {
    lo.push_back(bits_to_float(bits));
    hi.push_back(bits_to_float(bits ^ 0x80000000u));  // the high half gets the opposite sign
  }
  const std::vector<uint32_t> got = pack_bf16x2_words(lo, hi);
  for (std::size_t i = 0; i < lo.size(); ++i) {
    uint32_t in_lo, in_hi;
    std::memcpy(&in_lo, &lo[i], 4);
    std::memcpy(&in_hi, &hi[i], 4);
    INFO("inputs 0x" << std::hex << in_lo << " 0x" << in_hi << " packed 0x" << got[i]);
    REQUIRE((got[i] & 0xFFFFu) == bf16_reference(lo[i]));
    REQUIRE((got[i] >> 16) == bf16_reference(hi[i]));
  }
  // NaN stays NaN (exponent all ones, significand non-zero) in either half.
  const float nan = std::nanf("");
  const std::vector<uint32_t> nans = pack_bf16x2_words({nan, 1.0f}, {2.0f, nan});
  CHECK((nans[0] & 0x7F80u) == 0x7F80u);
  CHECK((nans[0] & 0x007Fu) != 0);
  CHECK((nans[0] >> 16) == 0x4000u);
  CHECK((nans[1] & 0xFFFFu) == 0x3F80u);
  CHECK((nans[1] >> 16 & 0x7F80u) == 0x7F80u);
  CHECK((nans[1] >> 16 & 0x007Fu) != 0);
  require_guards_intact();
}

TEST_CASE("mma.sync m16n8k16 bf16 matches a scalar matmul of the bf16-rounded operands") {
  AE_GPU_TEST_PRELUDE();
  for (uint32_t seed : {4u, 5u, 6u}) {
    const std::vector<float> a = random_values(16 * 16, seed), b = random_values(16 * 8, seed + 100),
                             c = random_values(16 * 8, seed + 200);
    const std::vector<float> d = mma_m16n8k16_bf16(a, b, c);
    for (int r = 0; r < 16; ++r) {
      for (int col = 0; col < 8; ++col) {
        double ref = c[static_cast<std::size_t>(r * 8 + col)];
        for (int k = 0; k < 16; ++k) {
          ref += static_cast<double>(bf16_value(bf16_reference(a[static_cast<std::size_t>(r * 16 + k)]))) *
                 bf16_value(bf16_reference(b[static_cast<std::size_t>(k * 8 + col)]));
        }
        INFO("seed " << seed << " D[" << r << "][" << col << "]");
        REQUIRE(d[static_cast<std::size_t>(r * 8 + col)] == doctest::Approx(ref).epsilon(1e-5).scale(1.0));
      }
    }
  }
  // One-hot operands pin the layout, both halves of every register: A = e(r,k), B = 3*e(k,c)
  // gives D = 3*e(r,c) exactly; a C one-hot passes through unchanged.
  for (int r : {0, 7, 8, 15}) {
    for (int k : {0, 1, 6, 7, 8, 9, 14, 15}) {
      for (int col : {0, 5, 7}) {
        std::vector<float> a(256, 0.0f), b(128, 0.0f), c(128, 0.0f);
        a[static_cast<std::size_t>(r * 16 + k)] = 1.0f;
        b[static_cast<std::size_t>(k * 8 + col)] = 3.0f;
        c[static_cast<std::size_t>(((r + 3) % 16) * 8 + (col + 1) % 8)] = 0.5f;
        const std::vector<float> d = mma_m16n8k16_bf16(a, b, c);
        for (int i = 0; i < 128; ++i) {
          const float expected = (i == r * 8 + col ? 3.0f : 0.0f) + c[static_cast<std::size_t>(i)];
          INFO("r " << r << " k " << k << " c " << col << " element " << i);
          REQUIRE(d[static_cast<std::size_t>(i)] == expected);
        }
      }
    }
  }
  require_guards_intact();
}
