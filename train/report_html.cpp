#include "train/report_html.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "runtime/atomic_file.h"

namespace ae::train {

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

namespace {
std::string num(double v, const char* f = "%.4g") {
  char buf[32];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}
}  // namespace

std::string svg_line_chart(const std::string& title, const std::vector<Series>& series, int first_x,
                           const std::string& x_label) {
  const double W = 520, H = 260, L = 56, R = 16, T = 28, B = 36;
  double lo = INFINITY, hi = -INFINITY;
  std::size_t n = 0;
  for (const auto& s : series) {
    n = std::max(n, s.y.size());
    for (double v : s.y)
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  }
  std::ostringstream os;
  os << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H << "' viewBox='0 0 " << W << " "
     << H << "' role='img' aria-label='" << html_escape(title) << "'>";
  os << "<text x='" << W / 2 << "' y='18' text-anchor='middle' font-size='14'>" << html_escape(title) << "</text>";
  if (n == 0 || !std::isfinite(lo)) return os.str() + "<text x='20' y='60'>no data</text></svg>";
  if (hi - lo < 1e-12) hi = lo + 1, lo -= 1;
  const double pad = (hi - lo) * 0.05;
  lo -= pad, hi += pad;
  auto px = [&](std::size_t i) { return n == 1 ? L + (W - L - R) / 2 : L + (W - L - R) * static_cast<double>(i) / static_cast<double>(n - 1); };
  auto py = [&](double v) { return T + (H - T - B) * (1 - (v - lo) / (hi - lo)); };
  os << "<rect x='" << L << "' y='" << T << "' width='" << W - L - R << "' height='" << H - T - B
     << "' fill='none' stroke='#999'/>";
  for (int k = 0; k <= 4; ++k) {
    const double v = lo + (hi - lo) * k / 4.0;
    os << "<text x='" << L - 4 << "' y='" << py(v) + 4 << "' text-anchor='end' font-size='10'>" << num(v) << "</text>";
    os << "<line x1='" << L << "' x2='" << W - R << "' y1='" << py(v) << "' y2='" << py(v) << "' stroke='#eee'/>";
  }
  for (std::size_t i = 0; i < n; ++i)
    if (n <= 25 || i % ((n + 19) / 20) == 0)
      os << "<text x='" << px(i) << "' y='" << H - B + 14 << "' text-anchor='middle' font-size='10'>"
         << static_cast<int>(i) + first_x << "</text>";
  os << "<text x='" << (L + W - R) / 2 << "' y='" << H - 6 << "' text-anchor='middle' font-size='11'>"
     << html_escape(x_label) << "</text>";
  double ly = T + 12;
  for (const auto& s : series) {
    std::ostringstream pts;
    for (std::size_t i = 0; i < s.y.size(); ++i)
      if (std::isfinite(s.y[i])) pts << num(px(i), "%.1f") << "," << num(py(s.y[i]), "%.1f") << " ";
    os << "<polyline fill='none' stroke='" << s.colour << "' stroke-width='2' points='" << pts.str() << "'/>";
    for (std::size_t i = 0; i < s.y.size(); ++i)
      if (std::isfinite(s.y[i]))
        os << "<circle cx='" << num(px(i), "%.1f") << "' cy='" << num(py(s.y[i]), "%.1f") << "' r='3' fill='"
           << s.colour << "'/>";
    os << "<text x='" << W - R - 4 << "' y='" << ly << "' text-anchor='end' font-size='11' fill='" << s.colour << "'>"
       << html_escape(s.label) << "</text>";
    ly += 14;
  }
  os << "</svg>";
  return os.str();
}

std::vector<std::pair<std::string, std::string>> training_settings(const TrainOptions& o, const std::string& init,
                                                                   const std::string& head, const std::string& optimizer,
                                                                   const std::string& resize_mode) {
  return {{"train csv", o.train_csv},
          {"images", o.images_dir},
          {"validation", o.val_csv.empty() ? "fraction " + num(o.val_fraction) + " of the training images" : o.val_csv},
          {"init", init.empty() ? "random" : init},
          {"head", head},
          {"epochs", std::to_string(o.epochs)},
          {"batch", std::to_string(o.batch)},
          {"optimizer", optimizer},
          {"lr", num(o.lr)},
          {"lr decay", num(o.lr_decay) + " every " + std::to_string(o.decay_every) + " epochs"},
          {"input", std::to_string(o.size) + " px (" + resize_mode + ", train resize " + std::to_string(o.resize_to) + ")"},
          {"device", o.device.str()},
          {"seed", std::to_string(o.seed)}};
}

void write_training_report(const TrainResult& result, const std::vector<std::pair<std::string, std::string>>& settings,
                           const std::string& out_dir) {
  const std::string html = training_report_html(result, settings);
  atomic_write((std::filesystem::path(out_dir) / "report.html").string(), html.data(), html.size());
}

std::string training_report_html(const TrainResult& result,
                                 const std::vector<std::pair<std::string, std::string>>& settings) {
  Series loss{"train loss", "#1f77b4", {}}, val{"val MSE", "#d62728", {}};
  Series rho{"val Spearman", "#2ca02c", {}}, r{"val Pearson", "#9467bd", {}};
  for (const auto& e : result.epochs) {
    loss.y.push_back(e.train_loss);
    val.y.push_back(e.val_mse);
    rho.y.push_back(e.val_spearman);
    r.y.push_back(e.val_pearson);
  }
  std::ostringstream os;
  os << "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>aesthete training report</title>"
     << "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
     << "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}"
     << "tr.best{background:#fff6d5}td.k{text-align:left}</style></head><body>";
  os << "<h1>aesthete training report</h1>";
  if (result.best_epoch > 0)
    os << "<p>Best epoch (lowest validation MSE, validation images drawn from the <em>training</em> data): <b>"
       << result.best_epoch << "</b>, val MSE " << num(result.best_val_mse) << ". Saved as model.safetensors.</p>";
  if (result.interrupted) os << "<p><b>Interrupted</b>: resume with <code>--resume</code>.</p>";
  if (result.diverged) os << "<p><b>Stopped: the loss became NaN/Inf.</b></p>";
  os << "<div>" << svg_line_chart("Loss (MSE on z-scores)", {loss, val})
     << svg_line_chart("Validation correlation", {rho, r}) << "</div>";
  os << "<h2>Epochs</h2><table><tr><th>epoch</th><th>lr</th><th>train loss</th><th>val MSE</th><th>Spearman</th>"
     << "<th>Pearson</th><th>images/s</th><th>seconds</th><th>skipped</th></tr>";
  for (const auto& e : result.epochs)
    os << "<tr" << (e.epoch == result.best_epoch ? " class='best'" : "") << "><td>" << e.epoch << "</td><td>"
       << num(e.lr) << "</td><td>" << num(e.train_loss) << "</td><td>" << num(e.val_mse) << "</td><td>"
       << num(e.val_spearman, "%.3f") << "</td><td>" << num(e.val_pearson, "%.3f") << "</td><td>"
       << num(e.images_per_s, "%.1f") << "</td><td>" << num(e.seconds, "%.1f") << "</td><td>" << e.skipped
       << "</td></tr>";
  os << "</table><h2>Settings</h2><table>";
  for (const auto& [k, v] : settings) os << "<tr><td class='k'>" << html_escape(k) << "</td><td class='k'>" << html_escape(v) << "</td></tr>";
  os << "</table></body></html>\n";
  return os.str();
}


std::string svg_bar_chart(const std::string& title, const std::vector<std::string>& labels,
                          const std::vector<Series>& series) {
  // The legend stands in its own column right of the plot, one entry per line.
  const double L = 56, T = 28, B = 70, H = 300, legend_w = 250;
  const double group_w = std::max(18.0, 14.0 * static_cast<double>(series.size()) + 8);
  const double R = 16 + legend_w;
  const double W = std::max(520.0 + legend_w, L + R + group_w * static_cast<double>(labels.size()));
  double lo = 0, hi = 0;
  for (const auto& s : series)
    for (double v : s.y)
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  if (hi - lo < 1e-12) hi = lo + 1;
  const double pad = (hi - lo) * 0.05;
  lo -= lo < 0 ? pad : 0;
  hi += pad;
  auto py = [&](double v) { return T + (H - T - B) * (1 - (v - lo) / (hi - lo)); };
  std::ostringstream os;
  os << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H << "' viewBox='0 0 " << W << " "
     << H << "' role='img' aria-label='" << html_escape(title) << "'>";
  os << "<text x='" << W / 2 << "' y='18' text-anchor='middle' font-size='14'>" << html_escape(title) << "</text>";
  for (int k = 0; k <= 4; ++k) {
    const double v = lo + (hi - lo) * k / 4.0;
    os << "<text x='" << L - 4 << "' y='" << py(v) + 4 << "' text-anchor='end' font-size='10'>" << num(v, "%.3g")
       << "</text><line x1='" << L << "' x2='" << W - R << "' y1='" << py(v) << "' y2='" << py(v)
       << "' stroke='#eee'/>";
  }
  os << "<line x1='" << L << "' x2='" << W - R << "' y1='" << py(0) << "' y2='" << py(0) << "' stroke='#666'/>";
  const double bar_w = (group_w - 8) / static_cast<double>(std::max<std::size_t>(1, series.size()));
  for (std::size_t g = 0; g < labels.size(); ++g) {
    const double x0 = L + group_w * static_cast<double>(g) + 4;
    for (std::size_t si = 0; si < series.size(); ++si) {
      if (g >= series[si].y.size() || !std::isfinite(series[si].y[g])) continue;
      const double v = series[si].y[g];
      const double y_top = py(std::max(v, 0.0)), y_bottom = py(std::min(v, 0.0));
      os << "<rect x='" << num(x0 + bar_w * static_cast<double>(si), "%.1f") << "' y='" << num(y_top, "%.1f")
         << "' width='" << num(bar_w - 1, "%.1f") << "' height='" << num(std::max(0.5, y_bottom - y_top), "%.1f")
         << "' fill='" << series[si].colour << "'><title>" << html_escape(labels[g]) << " " << html_escape(series[si].label)
         << ": " << num(v) << "</title></rect>";
    }
    const double cx = x0 + (group_w - 8) / 2;
    os << "<text transform='translate(" << num(cx, "%.1f") << "," << H - B + 10 << ") rotate(45)' font-size='10'>"
       << html_escape(labels[g].size() > 16 ? labels[g].substr(0, 15) + "..." : labels[g]) << "</text>";
  }
  double ly = T + 2;
  const double lx = W - legend_w + 8;
  for (const auto& s : series) {
    os << "<rect x='" << lx << "' y='" << ly << "' width='10' height='10' fill='" << s.colour << "'/><text x='"
       << lx + 14 << "' y='" << ly + 9 << "' font-size='11'>" << html_escape(s.label) << "</text>";
    ly += 16;
  }
  os << "</svg>";
  return os.str();
}

namespace {

double mean_of(const std::vector<double>& v) {
  double s = 0;
  int n = 0;
  for (double x : v)
    if (std::isfinite(x)) s += x, ++n;
  return n ? s / n : NAN;
}

// Histogram counts of `v` over [lo, hi) in `bins` bins, as a bar chart with bin centres as labels.
std::string svg_histogram(const std::string& title, const std::vector<Series>& series, int bins) {
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& s : series)
    for (double v : s.y)
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  if (!std::isfinite(lo)) return svg_bar_chart(title, {}, {});
  if (hi - lo < 1e-9) lo -= 0.05, hi += 0.05;
  const double w = (hi - lo) / bins;
  std::vector<std::string> labels;
  for (int b = 0; b < bins; ++b) labels.push_back(num(lo + w * (b + 0.5), "%.2f"));
  std::vector<Series> counts;
  for (const auto& s : series) {
    Series c{s.label, s.colour, std::vector<double>(static_cast<std::size_t>(bins), 0.0)};
    for (double v : s.y)
      if (std::isfinite(v)) c.y[static_cast<std::size_t>(std::clamp(static_cast<int>((v - lo) / w), 0, bins - 1))] += 1;
    counts.push_back(c);
  }
  return svg_bar_chart(title, labels, counts);
}

}  // namespace

std::string personalisation_report_html(const PersonaliseResult& r, const std::string& command) {
  const PersonaliseOptions& o = r.options;
  std::vector<std::string> users;
  Series g{"generic", "#999999", {}}, p{"personalised", "#1f77b4", {}};
  Series delta{"delta rho (epoch chosen honestly)", "#1f77b4", {}};
  Series oracle{"oracle delta rho (epoch chosen on test)", "#ff7f0e", {}};
  std::vector<Series> curves;
  const char* palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"};
  for (const std::string& u : r.users) {
    std::vector<double> rg, rp;
    std::vector<std::vector<double>> runs;
    for (const auto& row : r.rows) {
      if (row.user != u || row.repeat < 0) continue;
      rg.push_back(row.rho_generic);
      rp.push_back(row.rho_personal);
      delta.y.push_back(row.rho_personal - row.rho_generic);
      oracle.y.push_back(row.oracle_rho - row.rho_generic);
      runs.push_back(row.test_rho);
    }
    if (rg.empty()) continue;
    users.push_back(u);
    g.y.push_back(mean_of(rg));
    p.y.push_back(mean_of(rp));
    if (curves.size() < 8) {
      Series c{u, palette[curves.size()], {}};
      for (std::size_t e = 0; !runs.empty() && e < runs.front().size(); ++e) {
        std::vector<double> at;
        for (const auto& run : runs)
          if (e < run.size()) at.push_back(run[e]);
        c.y.push_back(mean_of(at));
      }
      curves.push_back(c);
    }
  }
  std::ostringstream os;
  os << "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>aesthete personalisation report</title>"
     << "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}"
     << "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}td.k{text-align:left}"
     << "code{background:#f4f4f4;padding:2px 4px;word-break:break-all}.note{color:#555}</style></head><body>";
  os << "<h1>Personalisation: " << mode_name(o.mode) << ", k = " << o.k << "</h1>";
  const double mg = mean_of(g.y), mp = mean_of(p.y);
  os << "<p>" << users.size() << " users, " << delta.y.size() << " runs. Mean Spearman rho on each user's held-out "
     << "images: generic <b>" << num(mg, "%.3f") << "</b>, personalised <b>" << num(mp, "%.3f") << "</b> (delta "
     << num(mp - mg, "%+.3f") << "; the epoch is " << (o.select == EpochSelect::fixed ? "fixed at " + std::to_string(o.epochs)
                                                                                              : std::string("chosen on a validation part of the k images"))
     << ", never on the test images). The original system's optimistic number (best epoch chosen on the test "
     << "images) would be " << num(mean_of(oracle.y), "%+.3f") << ".</p>";
  if (r.interrupted) os << "<p><b>Interrupted</b>: continue with <code>--resume</code>.</p>";
  os << "<div>" << svg_bar_chart("Spearman rho per user (mean over repeats)", users, {g, p}) << "</div>";
  os << "<div>" << svg_histogram("Distribution of delta rho over runs", {delta, oracle}, 12) << "</div>";
  os << "<div>" << svg_line_chart("Test Spearman rho per epoch (mean over repeats; epoch 0 = generic)", curves, 0)
     << "</div>";
  os << "<p class='note'>Test curves are measured after every epoch for this chart and the oracle column only; they "
        "never steer training or selection.</p>";
  os << "<h2>Runs</h2><table><tr><th>user</th><th>repeat</th><th>train</th><th>val</th><th>test</th>"
     << "<th>rho generic</th><th>rho personal</th><th>delta rho</th><th>MSE generic</th><th>MSE personal</th>"
     << "<th>epochs</th><th>oracle epoch</th><th>oracle delta rho</th></tr>";
  for (const auto& row : r.rows) {
    if (row.repeat < 0) continue;
    os << "<tr><td class='k'>" << html_escape(row.user) << "</td><td>" << row.repeat << "</td><td>" << row.n_train
       << "</td><td>" << row.n_val << "</td><td>" << row.n_test << "</td><td>" << num(row.rho_generic, "%.3f")
       << "</td><td>" << num(row.rho_personal, "%.3f") << "</td><td>" << num(row.rho_personal - row.rho_generic, "%+.3f")
       << "</td><td>" << num(row.mse_generic, "%.3f") << "</td><td>" << num(row.mse_personal, "%.3f") << "</td><td>"
       << row.epochs << "</td><td>" << row.oracle_epoch << "</td><td>" << num(row.oracle_rho - row.rho_generic, "%+.3f")
       << "</td></tr>";
  }
  os << "</table><h2>Settings</h2><table>";
  const std::vector<std::pair<std::string, std::string>> settings = {
      {"mode", mode_name(o.mode)}, {"k", std::to_string(o.k)}, {"repeats", std::to_string(o.repeats)},
      {"epochs", std::to_string(o.epochs)}, {"select", select_name(o.select)},
      {"lr", num(o.lr) + " x" + num(o.lr_decay) + " every " + std::to_string(o.decay_every) + " epochs"},
      {"weight decay", num(o.weight_decay)}, {"batch", std::to_string(o.batch)},
      {"input", std::to_string(o.size) + " px (squash, train resize " + std::to_string(o.resize_to) + ")"},
      {"trainable parameters per user", std::to_string(r.trainable_parameters)},
      {"user state", num(static_cast<double>(r.user_state_bytes) / 1e6, "%.2f") + " MB"}, {"seed", std::to_string(o.seed)}};
  for (const auto& [k, v] : settings)
    os << "<tr><td class='k'>" << html_escape(k) << "</td><td class='k'>" << html_escape(v) << "</td></tr>";
  os << "</table><h2>Command</h2><p><code>" << html_escape(command) << "</code></p>";
  os << "<p class='note'>Each (user, repeat) is seeded on its own: add <code>--users ID --only-repeat R</code> to "
        "rerun one alone. draws.csv lists the images each run trained, validated and tested on.</p>";
  os << "</body></html>\n";
  return os.str();
}

}  // namespace ae::train
