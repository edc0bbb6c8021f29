#pragma once
// Correlation metrics used for model selection and personalisation reports.
#include <vector>

namespace ae::metrics {

// Ranks starting at 1, ties get the average of the ranks they span (scipy's "average").
std::vector<double> average_ranks(const std::vector<double>& v);
double pearson(const std::vector<double>& a, const std::vector<double>& b);  // NaN if a side is constant
// scipy.stats.spearmanr: Pearson correlation of average ranks.
double spearman(const std::vector<double>& a, const std::vector<double>& b);
double mse(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace ae::metrics
