#pragma once
// Seeded random streams for the generated data sets (train/synthetic.cpp, train/photo_people.cpp):
// one Philox stream per (seed, purpose, a, b), so every image, rating and draw is a pure function
// of the config and its indices, and a data set is byte-identical whatever order it is made in.
#include <cmath>
#include <cstdint>

#include "runtime/philox.h"

namespace ae::data {

struct SeededStream {
  uint64_t key, i = 0;
  float uniform() { return philox::uniform(key, i++); }  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * static_cast<double>(uniform()); }
  double gaussian() {  // Box-Muller
    const double u1 = 1.0 - static_cast<double>(uniform());  // (0, 1]
    const double u2 = static_cast<double>(uniform());
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * 3.14159265358979323846 * u2);
  }
};

inline uint64_t mix64(uint64_t x) {  // splitmix64 finaliser
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The key of the stream for (seed, purpose, a, b).
inline uint64_t stream_key(uint64_t seed, uint64_t purpose, uint64_t a, uint64_t b = 0) {
  return mix64(mix64(mix64(mix64(seed) ^ purpose) ^ a) ^ b);
}

}  // namespace ae::data
