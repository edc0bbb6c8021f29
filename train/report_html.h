#pragma once
// Self-contained HTML reports (inline SVG charts, no scripts, no network) for training runs: the
// library renders them so that the command line and the Python module (DESIGN.md "Front ends")
// write the same report.html.
#include <string>
#include <utility>
#include <vector>

#include "train/personalise.h"
#include "train/trainer.h"

namespace ae::train {

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
std::string personalisation_report_html(const PersonaliseResult& result, const std::string& command);

// report.html of `aesthete train`: settings, curves, the per-epoch table, the best epoch.
std::string training_report_html(const TrainResult& result,
                                 const std::vector<std::pair<std::string, std::string>>& settings);

// The settings table of a training run's report, from its options and the texts it was given
// (init: the starting weights' path, '' for random; head, optimizer, resize_mode as typed).
std::vector<std::pair<std::string, std::string>> training_settings(const TrainOptions& o, const std::string& init,
                                                                   const std::string& head, const std::string& optimizer,
                                                                   const std::string& resize_mode);

// Writes out_dir/report.html (atomic) for `result`.
void write_training_report(const TrainResult& result, const std::vector<std::pair<std::string, std::string>>& settings,
                           const std::string& out_dir);

std::string html_escape(const std::string& s);

}  // namespace ae::train
