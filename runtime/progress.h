#pragma once
// Progress reporting on stderr: a live bar redrawn in place on a terminal, plain periodic
// lines otherwise (logs, CI), so long jobs are readable in both places.
#include <chrono>
#include <cstdint>
#include <string>

namespace ae {

class Progress {
 public:
  // total: number of steps (0 = unknown). label: e.g. "epoch 3/10".
  Progress(std::string label, int64_t total, bool force_plain = false);
  // Records progress; `status` is appended (e.g. "loss 0.412  812 img/s").
  void update(int64_t done, const std::string& status);
  // Final line (always printed), at the last update()'s count (at total when update was never called).
  void finish(const std::string& status);

  static bool stderr_is_terminal();

 private:
  void draw(int64_t done, const std::string& status, bool final_line);

  std::string label_;
  int64_t total_;
  int64_t done_ = -1;  // the last update()'s count, -1 before the first
  bool terminal_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// "1m05s", "2h03m", "12s"
std::string format_duration(double seconds);

}  // namespace ae
