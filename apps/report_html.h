#pragma once
// Self-contained HTML reports (inline SVG charts, no scripts, no network) for training runs.
#include <string>
#include <utility>
#include <vector>

#include "train/trainer.h"

namespace ae::app {

struct Series {
  std::string label;
  std::string colour;  // CSS colour
  std::vector<double> y;
};

// A line chart of several series over x = 1..n, as an <svg> element.
std::string svg_line_chart(const std::string& title, const std::vector<Series>& series);

// report.html of `aesthete train`: settings, curves, the per-epoch table, the best epoch.
std::string training_report_html(const train::TrainResult& result,
                                 const std::vector<std::pair<std::string, std::string>>& settings);

std::string html_escape(const std::string& s);

}  // namespace ae::app
