#include "train/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "runtime/error.h"

namespace ae::metrics {

namespace {
void check_pair(const char* what, const std::vector<double>& a, const std::vector<double>& b) {
  AE_CHECK(a.size() == b.size(), what << ": sizes differ (" << a.size() << " vs " << b.size() << ")");
}
}  // namespace

std::vector<double> average_ranks(const std::vector<double>& v) {
  std::vector<std::size_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t i, std::size_t j) { return v[i] < v[j]; });
  std::vector<double> rank(v.size());
  std::size_t i = 0;
  while (i < order.size()) {
    std::size_t j = i;
    while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
    const double r = (static_cast<double>(i) + static_cast<double>(j)) / 2.0 + 1.0;
    for (std::size_t k = i; k <= j; ++k) rank[order[k]] = r;
    i = j + 1;
  }
  return rank;
}

double pearson(const std::vector<double>& a, const std::vector<double>& b) {
  check_pair("pearson", a, b);
  const std::size_t n = a.size();
  if (n < 2) return std::numeric_limits<double>::quiet_NaN();
  const double ma = std::accumulate(a.begin(), a.end(), 0.0) / static_cast<double>(n);
  const double mb = std::accumulate(b.begin(), b.end(), 0.0) / static_cast<double>(n);
  double sab = 0, saa = 0, sbb = 0;
  for (std::size_t i = 0; i < n; ++i) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  if (saa == 0 || sbb == 0) return std::numeric_limits<double>::quiet_NaN();
  return std::clamp(sab / std::sqrt(saa * sbb), -1.0, 1.0);
}

double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  check_pair("spearman", a, b);
  return pearson(average_ranks(a), average_ranks(b));
}

double mse(const std::vector<double>& a, const std::vector<double>& b) {
  check_pair("mse", a, b);
  AE_CHECK(!a.empty(), "mse of empty vectors");
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  return s / static_cast<double>(a.size());
}

}  // namespace ae::metrics
