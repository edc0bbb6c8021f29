#include "runtime/progress.h"

#include <unistd.h>

#include <cstdio>
#include <sstream>

namespace ae {

bool Progress::stderr_is_terminal() { return isatty(STDERR_FILENO) == 1; }

Progress::Progress(std::string label, int64_t total, bool force_plain)
    : label_(std::move(label)), total_(total), terminal_(!force_plain && stderr_is_terminal()) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e8) return "?";
  const long s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
  else if (s >= 60)
    std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%lds", s);
  return buf;
}

void Progress::update(int64_t done, const std::string& status) {
  done_ = done;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  // A terminal gets ~10 redraws a second; a log gets a line every 10 s.
  if (since < (terminal_ ? 0.1 : 10.0)) return;
  last_draw_ = now;
  draw(done, status, false);
}

// Where the last update() left it: an interrupted epoch says how far it got, not total/total.
void Progress::finish(const std::string& status) { draw(done_ >= 0 ? done_ : total_, status, true); }

void Progress::draw(int64_t done, const std::string& status, bool final_line) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::ostringstream os;
  os << label_;
  if (total_ > 0) {
    const double frac = static_cast<double>(done) / static_cast<double>(total_);
    if (terminal_) {
      const int width = 24;
      const int fill = static_cast<int>(frac * width + 0.5);
      os << " [" << std::string(static_cast<std::size_t>(fill), '#')
         << std::string(static_cast<std::size_t>(width - fill), '.') << "]";
    }
    os << " " << done << "/" << total_;
    if (!final_line && done > 0) os << " ETA " << format_duration(elapsed / frac - elapsed);
  }
  if (!status.empty()) os << "  " << status;
  os << "  " << format_duration(elapsed);
  if (terminal_) {
    std::fprintf(stderr, "\r\033[K%s%s", os.str().c_str(), final_line ? "\n" : "");
  } else {
    std::fprintf(stderr, "%s\n", os.str().c_str());
  }
  std::fflush(stderr);
}

}  // namespace ae
