#include "apps/report_html.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace ae::app {

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

std::string svg_line_chart(const std::string& title, const std::vector<Series>& series) {
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
    os << "<text x='" << px(i) << "' y='" << H - B + 14 << "' text-anchor='middle' font-size='10'>" << i + 1
       << "</text>";
  os << "<text x='" << (L + W - R) / 2 << "' y='" << H - 6 << "' text-anchor='middle' font-size='11'>epoch</text>";
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

std::string training_report_html(const train::TrainResult& result,
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

}  // namespace ae::app
