#include "tests/support/check.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "runtime/philox.h"

namespace ae::test {

CompareResult compare(const std::vector<float>& got, const std::vector<double>& ref, const Tolerance& tol,
                      const std::string& what) {
  CompareResult r;
  std::ostringstream os;
  if (got.size() != ref.size()) {
    r.ok = false;
    os << what << ": size " << got.size() << " != reference size " << ref.size();
    r.report = os.str();
    return r;
  }
  double err2 = 0, ref2 = 0;
  int listed = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], e = ref[i];
    const double d = std::fabs(g - e);
    const bool finite_mismatch = std::isfinite(e) && !std::isfinite(g);
    if (std::isfinite(d)) {
      err2 += d * d;
      if (d > r.max_abs_err) {
        r.max_abs_err = d;
        r.worst_index = static_cast<int64_t>(i);
      }
    }
    ref2 += e * e;
    if (finite_mismatch || !(d <= tol.atol + tol.rtol * std::fabs(e))) {
      ++r.mismatches;
      if (listed < 10) {
        os << "  [" << i << "] got " << g << " expected " << e << " (|diff| " << d << ")\n";
        ++listed;
      }
    }
  }
  r.nmse = ref2 > 0 ? err2 / ref2 : err2;
  const bool nmse_ok = r.nmse <= tol.max_nmse;
  r.ok = r.mismatches == 0 && nmse_ok;
  std::ostringstream head;
  head << what << ": " << got.size() << " elements, max |diff| " << r.max_abs_err << " at " << r.worst_index
       << ", nmse " << r.nmse << " (limit " << tol.max_nmse << "), " << r.mismatches
       << " outside atol " << tol.atol << " + rtol " << tol.rtol << "\n";
  r.report = head.str() + os.str();
  return r;
}

std::vector<double> to_double(const Tensor& t) {
  std::vector<float> v = t.to_vector();
  return std::vector<double>(v.begin(), v.end());
}

CompareResult compare(const Tensor& got, const Tensor& ref, const Tolerance& tol, const std::string& what) {
  if (got.shape() != ref.shape()) {
    CompareResult r;
    r.ok = false;
    r.report = what + ": shape " + shape_str(got.shape()) + " != reference " + shape_str(ref.shape());
    return r;
  }
  return compare(got.to_vector(), to_double(ref), tol, what);
}

CompareResult compare(const Tensor& got, const std::vector<double>& ref, const Tolerance& tol,
                      const std::string& what) {
  return compare(got.to_vector(), ref, tol, what);
}

void require_close(const Tensor& got, const Tensor& ref, const Tolerance& tol, const std::string& what) {
  INFO(what << ": got " << got.desc() << ", reference " << ref.desc());
  REQUIRE(got.defined());
  REQUIRE(ref.defined());
  REQUIRE(got.shape() == ref.shape());
  REQUIRE(got.dtype() == ref.dtype());
  AE_REQUIRE_OK(compare(got, ref, tol, what));
}

void require_cuda_close(const Tensor& got, const Tensor& ref, const Tolerance& tol, const std::string& what) {
  {
    INFO(what << ": got " << got.desc() << ", expected on a CUDA device");
    REQUIRE(got.defined());
    REQUIRE(got.device().is_cuda());
  }
  require_close(got, ref, tol, what);
}

Tensor random_tensor(const Shape& shape, uint64_t seed, float lo, float hi) {
  Tensor t = Tensor::empty(shape);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = lo + (hi - lo) * philox::uniform(seed * 7919 + 17, i);
  return t;
}

std::vector<double> numeric_gradient(Tensor& input, const std::function<double()>& f, double eps,
                                     int64_t max_elements) {
  float* p = input.f32();
  const int64_t n = max_elements < 0 ? input.numel() : std::min<int64_t>(max_elements, input.numel());
  std::vector<double> g(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const float orig = p[i];
    p[i] = static_cast<float>(orig + eps);
    const double fp = f();
    p[i] = static_cast<float>(orig - eps);
    const double fm = f();
    p[i] = orig;
    g[static_cast<std::size_t>(i)] = (fp - fm) / (2 * eps);
  }
  return g;
}

double weighted_sum(const Tensor& t, const Tensor& w) {
  AE_CHECK(t.numel() == w.numel(), "weighted_sum: " << t.desc() << " vs " << w.desc());
  std::vector<float> a = t.to_vector(), b = w.to_vector();
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

namespace {
std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : fallback;
}
}  // namespace

std::string source_dir() { return env_or("AE_SOURCE_DIR", "."); }
std::string build_dir() { return env_or("AE_BUILD_DIR", "build"); }
std::string shared_dir() { return env_or("AE_SHARED_DIR", source_dir() + "/../shared"); }

}  // namespace ae::test
