#include "apps/demo_page.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "model/checkpoint.h"
#include "runtime/atomic_file.h"
#include "runtime/error.h"
#include "session/session.h"
#include "train/image.h"
#include "train/labels.h"
#include "train/photo_people.h"
#include "train/report_html.h"

namespace ae::app {

namespace fs = std::filesystem;
using train::html_escape;
using train::Series;
using train::svg_bar_chart;
using train::svg_line_chart;

namespace {

std::string fmt(const char* f, double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  AE_CHECK(in, "demo page: cannot read '" << path << "' (did its step run?)");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A CSV with a header row and no quoted fields (what our own steps write), as rows of name -> value.
std::vector<std::map<std::string, std::string>> read_csv(const std::string& path) {
  std::istringstream in(read_text(path));
  std::string line;
  std::vector<std::string> header;
  std::vector<std::map<std::string, std::string>> rows;
  auto split = [](const std::string& s) {
    std::vector<std::string> f;
    std::string cur;
    for (char c : s + ",")
      if (c == ',') f.push_back(cur), cur.clear();
      else if (c != '\r') cur += c;
    return f;
  };
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (header.empty()) {
      header = split(line);
      continue;
    }
    const auto f = split(line);
    AE_CHECK(f.size() == header.size(), "demo page: '" << path << "' has a row of " << f.size() << " fields, expected "
                                                       << header.size());
    std::map<std::string, std::string> row;
    for (std::size_t i = 0; i < f.size(); ++i) row[header[i]] = f[i];
    rows.push_back(std::move(row));
  }
  return rows;
}

double number(const std::map<std::string, std::string>& row, const std::string& key, const std::string& origin) {
  const auto it = row.find(key);
  AE_CHECK(it != row.end(), "demo page: '" << origin << "' has no column " << key);
  return std::strtod(it->second.c_str(), nullptr);
}

// The demo's models are trained on the default normalisation (FLICKR-AES's mean and std).
double stars(double z) { return session::stars(z, model::TargetNorm{}); }

std::string stars_text(double z) { return fmt("%.2f&#9733;", stars(z)) + " <span class='z'>(z " + fmt("%+.2f", z) + ")</span>"; }

const char* kStyle = R"(
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;margin:24px auto;padding:0 16px;color:#222;line-height:1.45}
h1{margin-bottom:4px} h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
.note{background:#f6f6f2;border-left:4px solid #c9a227;padding:8px 12px;font-size:14px}
.grid{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start} figure{margin:0;width:190px;font-size:12px}
figure img{width:190px;height:150px;object-fit:contain;background:#eee;border-radius:4px;display:block}
.wide figure{width:215px} .wide figure img{width:215px;height:170px}
.thumbs{gap:8px} .thumbs figure{width:84px} .thumbs figure img{width:84px;height:64px}
figcaption{margin-top:3px} .z{color:#888} .up{color:#0a7d2c} .down{color:#b3261e}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left} code,pre{background:#f4f4f4;font-size:12px}
pre{padding:8px;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.person{margin:10px 0 18px} .label{font-weight:600;margin:6px 0 2px}
)";

struct Enhanced {
  double before = 0, after = 0, generic_before = 0, generic_after = 0;
  nlohmann::json recipe;
  data::PhotoStats stats;
};

Enhanced read_enhanced(const std::string& dir, const std::string& image) {
  Enhanced e;
  const std::string json_path = (fs::path(dir) / (image + ".json")).string();
  try {
    e.recipe = nlohmann::json::parse(read_text(json_path));
    e.before = e.recipe.at("score_before").get<double>();
    e.after = e.recipe.at("score_after").get<double>();
    e.generic_before = e.recipe.at("generic_score_before").get<double>();
    e.generic_after = e.recipe.at("generic_score_after").get<double>();
  } catch (const nlohmann::json::exception& ex) {
    AE_FAIL("demo page: '" << json_path << "' is not the recipe `aesthete enhance` writes: " << ex.what());
  }
  e.stats = data::measure_photo(img::read_image((fs::path(dir) / image).string()));
  return e;
}

std::string recipe_text(const nlohmann::json& r) {
  std::string s = fmt("exposure %+.2f stops", r.value("exposure_stops", 0.0)) +
                  fmt(", contrast %+.2f", r.value("contrast", 0.0)) + fmt(", saturation %+.2f", r.value("saturation", 0.0)) +
                  fmt(", temperature %+.2f", r.value("temperature", 0.0)) + fmt(", tint %+.2f", r.value("tint", 0.0));
  return s;
}

// The statistic a person's taste is about, as shown (the sign of moody's is flipped back to luma).
std::string taste_change(const std::string& person, const data::PhotoStats& from, const data::PhotoStats& to) {
  const double a = data::photo_person_taste(person, from), b = data::photo_person_taste(person, to);
  const bool luma = person == "moody";
  const std::string name = person == "warm" ? "warmth" : person == "vivid" ? "chroma" : "luma";
  const double shown_a = luma ? -a : a, shown_b = luma ? -b : b;
  return name + " " + fmt("%.3f", shown_a) + " &rarr; " + fmt("%.3f", shown_b) + " <span class='" +
         (b > a ? "up" : "down") + "'>(" + (b > a ? "toward" : "away from") + " " + person + "'s taste)</span>";
}

}  // namespace

std::string write_demo_page(const std::string& dir, const DemoLayout& L, const DemoSettings& s,
                            const std::vector<DemoStep>& steps) {
  auto path = [&](const std::string& rel) { return (fs::path(dir) / rel).string(); };
  std::ostringstream h, term;
  double total_seconds = 0;
  for (const auto& st : steps) total_seconds += st.seconds;

  h << "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>aesthete demo</title><style>" << kStyle
    << "</style></head><body>\n";
  h << "<h1>aesthete: one photo, three tastes</h1>\n";
  h << "<p>Real photos from Debian's packages, edited into " << s.variants << " variants each, rated 1&ndash;5 stars by "
       "simulated people. A ResNet-18 learns the shared sense of quality from anonymous raters, then learns each person's "
       "taste from " << s.k << " of their ratings with residual adapters, edits held-out photos toward each taste by "
       "gradient ascent on photo-edit parameters, and shows where each model looks.</p>\n";
  h << "<p class='note'>What is simulated and what is measured. The photos are real; the people are not: each rating is "
       "computed from the variant's measured statistics plus noise (<code>" << html_escape(L.data)
    << "/attributes.csv</code> holds the ground truth; <code>train/photo_people.h</code> the formulas). "
       "No pretrained weights can be downloaded here, so the network is trained from scratch, on small images ("
    << s.size << "&times;" << s.size << " px, variants stored at " << s.side << " px) for " << s.train_epochs
    << " epochs" << (s.quick ? " &mdash; the <b>--quick</b> settings, a smoke run, not a showcase" : "")
    << ", to keep the whole demo within minutes on a 2-core CPU. Every number on this page is a measurement from this run (one "
       "draw of k ratings per person, tested on that person's other ratings), run on <b>"
    << html_escape(s.device) << "</b> in " << fmt("%.0f", total_seconds) << " s (measured).</p>\n";

  // ---- the people ----
  const data::LabelFile workers = data::read_labels(path(L.workers_csv()));
  h << "<h2>The people</h2><p>Everyone likes sharp, clean, well exposed photos; each test person also has a taste of "
       "their own. Their highest and lowest rated variants:</p>\n";
  for (const std::string& p : L.people) {
    std::vector<data::Rating> mine;
    for (const auto& r : workers.rows)
      if (r.user == p) mine.push_back(r);
    AE_CHECK(!mine.empty(), "demo page: '" << path(L.workers_csv()) << "' has no ratings by " << p);
    std::stable_sort(mine.begin(), mine.end(), [](const data::Rating& a, const data::Rating& b) { return a.z > b.z; });
    h << "<div class='person'><div class='label'>" << html_escape(p) << " &mdash; likes "
      << html_escape(data::photo_person_taste_name(p)) << " (" << mine.size() << " ratings)</div><div class='grid thumbs'>";
    const std::size_t n = std::min<std::size_t>(5, mine.size() / 2);
    for (std::size_t i = 0; i < 2 * n; ++i) {
      const data::Rating& r = i < n ? mine[i] : mine[mine.size() - 2 * n + i];
      if (i == n) h << "<figure style='width:40px;text-align:center;padding-top:24px'>&hellip;</figure>";
      h << "<figure><img src='" << html_escape(L.images() + "/" + r.image) << "' alt='" << html_escape(r.image)
        << "'><figcaption>" << fmt("%.0f&#9733;", stars(r.z)) << "</figcaption></figure>";
    }
    h << "</div></div>\n";
  }

  // ---- generic training ----
  const auto metrics = read_csv(path(L.generic + "/metrics.csv"));
  Series train_loss{"train loss", "#1f77b4", {}}, val_mse{"val MSE", "#d62728", {}}, val_rho{"val Spearman", "#2ca02c", {}};
  for (const auto& m : metrics) {
    train_loss.y.push_back(number(m, "train_loss", L.generic + "/metrics.csv"));
    val_mse.y.push_back(number(m, "val_mse", L.generic + "/metrics.csv"));
    val_rho.y.push_back(number(m, "val_spearman", L.generic + "/metrics.csv"));
  }
  h << "<h2>1. The generic model</h2><p>ResNet-18 from scratch on the anonymous raters' mean scores (<code>"
    << html_escape(L.train_csv()) << "</code>, FLICKR-AES format); the epoch is chosen on a validation split of the "
       "training images. <a href='" << html_escape(L.generic + "/report.html") << "'>Training report</a>.</p>\n<div class='grid'>"
    << svg_line_chart("loss (MSE, z units)", {train_loss, val_mse}) << svg_line_chart("validation Spearman rho", {val_rho})
    << "</div>\n";

  // ---- personalisation ----
  std::map<std::string, std::map<std::string, double>> rho;  // person -> column -> value
  for (const std::string& mode : L.modes) {
    const std::string rel = L.mode_dir(mode) + "/results.csv";
    for (const auto& row : read_csv(path(rel))) {
      const std::string user = row.at("user");
      rho[user]["generic"] = number(row, "rho_generic", rel);
      rho[user][mode] = number(row, "rho_personal", rel);
    }
  }
  std::vector<Series> bars = {{"generic", "#999999", {}}};
  const char* colours[] = {"#2ca02c", "#1f77b4", "#ff7f0e"};
  for (std::size_t i = 0; i < L.modes.size(); ++i) bars.push_back({L.modes[i], colours[i % 3], {}});
  for (const std::string& p : L.people) {
    AE_CHECK(rho.count(p) && rho[p].size() == L.modes.size() + 1, "demo page: personalisation results lack " << p);
    bars[0].y.push_back(rho[p]["generic"]);
    for (std::size_t i = 0; i < L.modes.size(); ++i) bars[i + 1].y.push_back(rho[p][L.modes[i]]);
  }
  h << "<h2>2. Personalisation</h2><p>For each person, " << s.k << " of their ratings train their own state on the shared "
       "backbone; Spearman's rho is measured on their other ratings, for the generic model and the personalised one. "
       "Modes: <b>adapters</b> (residual adapters + BatchNorm + head, " << s.adapters_epochs << " epochs; the deployable "
       "user files), <b>head</b> (the head only, " << s.head_epochs << " epochs) and <b>full</b> (every weight, "
    << s.full_epochs << " epochs).</p>\n<div class='grid'>" << svg_bar_chart("Spearman rho on held-out ratings", L.people, bars)
    << "<table><tr><th>person</th><th>generic</th>";
  for (const auto& m : L.modes) h << "<th>" << html_escape(m) << "</th>";
  h << "</tr>";
  term << "\nSpearman rho on each person's held-out ratings (measured; one draw of k=" << s.k << "):\n";
  term << "person    generic";
  for (const auto& m : L.modes) term << "  " << std::string(9 - std::min<std::size_t>(9, m.size()), ' ') << m;
  term << "\n";
  for (const std::string& p : L.people) {
    h << "<tr><td>" << html_escape(p) << "</td><td>" << fmt("%.3f", rho[p]["generic"]) << "</td>";
    term << p << std::string(10 - std::min<std::size_t>(10, p.size()), ' ') << fmt("%7.3f", rho[p]["generic"]);
    for (const auto& m : L.modes) {
      h << "<td>" << fmt("%.3f", rho[p][m]) << "</td>";
      term << "  " << fmt("%9.3f", rho[p][m]);
    }
    h << "</tr>";
    term << "\n";
  }
  h << "</table></div><p>Reports: ";
  for (const auto& m : L.modes) h << "<a href='" << html_escape(L.mode_dir(m) + "/report.html") << "'>" << html_escape(m) << "</a> ";
  h << "</p>\n";

  // ---- enhancement ----
  h << "<h2>3. The same photo, enhanced for each person</h2><p>Held-out photos (no one rated them) edited by gradient "
       "ascent on exposure, contrast, saturation, white balance and a tone curve, maximising the predicted score of the "
       "generic model or of one person's model. Scores are predictions (stars clamped to 1&ndash;5, z beside them); the "
       "statistic under each edit is measured on the written photo. Each edit's recipe (JSON) re-applies with "
       "<code>aesthete apply-recipe</code>.</p>\n";
  term << "\nEnhancement of held-out photos (measured statistic of the written photo, original -> edited):\n";
  for (const std::string& stem : L.held_out) {
    const std::string original_rel = L.held_out_photo(stem);
    const data::PhotoStats original = data::measure_photo(img::read_image(path(original_rel)));
    h << "<div class='label'>" << html_escape(stem) << "</div><div class='grid wide'>";
    h << "<figure><img src='" << html_escape(original_rel) << "' alt='original'><figcaption><b>original</b><br>luma "
      << fmt("%.3f", original.luma) << ", warmth " << fmt("%.3f", original.warmth) << ", chroma "
      << fmt("%.3f", original.chroma) << "</figcaption></figure>";
    std::vector<std::string> who = {"generic"};
    who.insert(who.end(), L.people.begin(), L.people.end());
    for (const std::string& w : who) {
      const std::string rel = L.enhanced(stem, w);
      const Enhanced e = read_enhanced(path(fs::path(rel).parent_path().string()), fs::path(rel).filename().string());
      h << "<figure><img src='" << html_escape(rel) << "' alt='" << html_escape(w) << "'><figcaption><b>for "
        << html_escape(w) << "</b>: " << stars_text(e.before) << " &rarr; " << stars_text(e.after);
      if (w != "generic") {
        h << "<br>generic model: " << fmt("%.2f", stars(e.generic_before)) << " &rarr; " << fmt("%.2f&#9733;", stars(e.generic_after))
          << "<br>" << taste_change(w, original, e.stats);
        const double a = data::photo_person_taste(w, original), b = data::photo_person_taste(w, e.stats);
        term << "  " << stem << " for " << w << ": " << (w == "warm" ? "warmth" : w == "vivid" ? "chroma" : "luma") << " "
             << fmt("%.3f", w == "moody" ? -a : a) << " -> " << fmt("%.3f", w == "moody" ? -b : b)
             << (b > a ? "  (toward the taste)" : "  (away from the taste)") << ", predicted "
             << fmt("%.2f", stars(e.before)) << " -> " << fmt("%.2f stars", stars(e.after)) << "\n";
      }
      h << "<br><span class='z'>" << recipe_text(e.recipe) << "</span> <a href='" << html_escape(rel + ".json")
        << "'>recipe</a></figcaption></figure>";
    }
    h << "</div>\n";
  }

  // ---- saliency ----
  h << "<h2>4. Where each model looks</h2><p>SmoothGrad saliency (" << s.smoothgrad << " noisy copies) at the network's "
       "input resolution: the generic model's map, and for each person their model's map minus the generic one "
       "(where the personal model is more sensitive than the generic one).</p>\n";
  for (const std::string& stem : L.held_out) {
    h << "<div class='label'>" << html_escape(stem) << "</div><div class='grid wide'>";
    std::vector<std::string> who = {"generic"};
    who.insert(who.end(), L.people.begin(), L.people.end());
    for (const std::string& w : who) {
      const std::string rel = L.saliency_map(stem, w);
      AE_CHECK(fs::is_regular_file(path(rel)), "demo page: saliency map '" << path(rel) << "' is missing");
      h << "<figure><img src='" << html_escape(rel) << "' alt='" << html_escape(w) << "'><figcaption>"
        << (w == "generic" ? "generic model" : html_escape(w) + " minus generic") << "</figcaption></figure>";
    }
    h << "</div>\n";
  }

  // ---- commands ----
  h << "<h2>5. Reproduce each step</h2><p>The demo ran these commands, in this order (times measured on this machine). "
       "On the real FLICKR-AES data the same commands take its label files and images.</p><table><tr><th>step</th>"
       "<th>seconds</th></tr>";
  for (const auto& st : steps) h << "<tr><td>" << html_escape(st.title) << "</td><td>" << fmt("%.1f", st.seconds) << "</td></tr>";
  h << "</table><pre>";
  for (const auto& st : steps) h << html_escape(st.command) << "\n";
  h << "</pre>\n</body></html>\n";

  const std::string page = path("index.html");
  const std::string text = h.str();
  atomic_write(page, text.data(), text.size());
  term << "\nDone in " << fmt("%.0f", total_seconds) << " s (measured). Page: " << fs::absolute(page).string() << "\n";
  return term.str();
}

}  // namespace ae::app
