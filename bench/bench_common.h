#pragma once
// What the CPU benchmarks of this folder share: deterministic random tensors, wall time of one call
// and the median of repeated timings.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <vector>

#include "runtime/philox.h"
#include "runtime/tensor.h"

namespace ae::bench {

// Values uniform in [lo, hi), the same for a seed on every machine.
inline Tensor random_tensor(const Shape& shape, uint64_t seed, float lo = -0.5f, float hi = 0.5f) {
  Tensor t = Tensor::empty(shape);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = lo + (hi - lo) * philox::uniform(seed, static_cast<uint64_t>(i));
  return t;
}

inline double seconds(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The median (the upper one of an even count); v must not be empty.
inline double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

}  // namespace ae::bench
