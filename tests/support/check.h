#pragma once
// Test helpers shared by every test file: tensor comparison with a two-part tolerance
// (per element |a-b| <= atol + rtol*|ref| and an aggregate normalised error; require_close),
// random tensors, and central finite-difference gradient checks. Exact (bitwise) equality is
// test::bitwise_equal in tests/support/expect.h.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace ae::test {

struct Tolerance {
  double atol = 1e-5;
  double rtol = 1e-4;
  double max_nmse = 1e-8;  // sum((a-b)^2) / sum(ref^2)
};

struct CompareResult {
  bool ok = true;
  double max_abs_err = 0;
  int64_t worst_index = -1;
  double nmse = 0;
  int64_t mismatches = 0;
  std::string report;  // human-readable, at most ~10 mismatches listed
};

// Compares got against ref (both host-readable f32). NaN/Inf anywhere in got where ref is finite fails.
CompareResult compare(const std::vector<float>& got, const std::vector<double>& ref, const Tolerance& tol,
                      const std::string& what);
CompareResult compare(const Tensor& got, const Tensor& ref, const Tolerance& tol, const std::string& what);
CompareResult compare(const Tensor& got, const std::vector<double>& ref, const Tolerance& tol,
                      const std::string& what);

// The shared "tensor close to a reference" assertion (no test file keeps its own). REQUIREs
// (fatal) that got and ref are both defined and have the same shape and dtype, then that got is
// within tol of ref by compare(): every element |got-ref| <= atol + rtol*|ref| (NaN/Inf in got
// where ref is finite fails) and the aggregate nmse. A failure shows `what`, both tensors' desc()
// and compare()'s report (max |diff| and where, nmse, the first mismatches). Either tensor may
// live on any device: both are read on the host. There is deliberately no default tolerance:
// each caller states the bound it means.
void require_close(const Tensor& got, const Tensor& ref, const Tolerance& tol, const std::string& what);

// require_close for device-vs-CPU tests, which also REQUIREs that got lives on a CUDA device (the
// real GPU or the emulated one), so that a result that silently stayed on the host cannot pass.
void require_cuda_close(const Tensor& got, const Tensor& ref, const Tolerance& tol, const std::string& what);

// Deterministic pseudo-random tensor with values uniform in [lo, hi).
Tensor random_tensor(const Shape& shape, uint64_t seed, float lo = -1.0f, float hi = 1.0f);
std::vector<double> to_double(const Tensor& t);

// Central finite-difference gradient of scalar f with respect to every element of `input`
// (perturbed in place, restored afterwards). Evaluates f in float, so use eps ~1e-2..1e-3
// and compare with a loose tolerance; f should be smooth near the point (no kinks).
std::vector<double> numeric_gradient(Tensor& input, const std::function<double()>& f, double eps = 1e-2,
                                     int64_t max_elements = -1);

// sum(t * w) in double: the usual "loss" for gradient checks (w random, fixed).
double weighted_sum(const Tensor& t, const Tensor& w);

// Marks the whole test binary as skipped: its main returns 77 and CTest prints "Skipped".
// Use when a precondition is missing (no GPU, no ../shared data), and keep such tests in a
// binary of their own so that a skip never hides checks that did run.
void skip_binary(const std::string& why);

// Path helpers: the source tree, the build tree, ../shared (may not exist).
std::string source_dir();
std::string build_dir();
std::string shared_dir();

}  // namespace ae::test

#define AE_REQUIRE_OK(result)                   \
  do {                                          \
    const auto& ae_r_ = (result);               \
    INFO(ae_r_.report);                         \
    REQUIRE(ae_r_.ok);                          \
  } while (0)
