#pragma once
// Self-contained HTML reports (inline SVG charts, no scripts, no network) for training runs.
#include <string>
#include <utility>
#include <vector>

#include "train/personalise.h"
#include "train/trainer.h"

namespace ae::app {

struct Series {
  std::string label;
  std::string colour;  // CSS colour
  std::vector<double> y;
};

// A line chart of several series over x = first_x .. first_x + n - 1, as an <svg> element.
std::string svg_line_chart(const std::string& title, const std::vector<Series>& series, int first_x = 1,
                           const std::string& x_label = "epoch");

// Grouped vertical bars: one group per label, one bar per series (values may be negative).
std::string svg_bar_chart(const std::string& title, const std::vector<std::string>& labels,
                          const std::vector<Series>& series);

// report.html of `aesthete personalise`: generic vs personalised rho per user, the delta-rho
// distribution, learning curves, the table of runs, the command that produced them.
std::string personalisation_report_html(const train::PersonaliseResult& result, const std::string& command);

// report.html of `aesthete train`: settings, curves, the per-epoch table, the best epoch.
std::string training_report_html(const train::TrainResult& result,
                                 const std::vector<std::pair<std::string, std::string>>& settings);

std::string html_escape(const std::string& s);

}  // namespace ae::app
