#include "kernels/cpu/im2col.h"

#include <algorithm>
#include <cstring>
#include <mutex>

#include "kernels/cpu/parallel_rows.h"
#include "runtime/alloc.h"

namespace ae::cpu {

namespace {

// A thread's share of a copy should be at least this many floats: waking a thread costs more
// than copying fewer.
constexpr int64_t kMinFloatsPerThread = 1 << 15;

// The kernel columns kw in [lo, hi) of an output pixel whose window starts at input column w0
// fall inside the image; the rest read padding.
struct ValidColumns {
  int64_t lo, hi;
};
inline ValidColumns valid_columns(const ConvGeometry& g, int64_t w0) {
  const int64_t lo = std::max<int64_t>(0, -w0);
  const int64_t hi = std::min<int64_t>(g.kw, g.w - w0);
  return {lo, std::max(lo, hi)};
}

// Column row r of the chunk starting at line l0: the receptive field of one output pixel.
void im2col_row(const ConvGeometry& g, const float* x, int64_t l0, int64_t r, float* dst_row) {
  const int64_t line = l0 + r / g.ow;
  const int64_t ow = r % g.ow;
  const int64_t n = line / g.oh, oh = line % g.oh;
  const int64_t w0 = ow * g.sw - g.pw;
  const ValidColumns v = valid_columns(g, w0);
  const int64_t window_row = g.kw * g.c;  // one kh slice of a column row
  for (int64_t kh = 0; kh < g.kh; ++kh) {
    float* dst = dst_row + kh * window_row;
    const int64_t h = oh * g.sh - g.ph + kh;
    if (h < 0 || h >= g.h || v.lo == v.hi) {
      std::memset(dst, 0, sizeof(float) * window_row);
      continue;
    }
    // The valid kernel columns read consecutive input pixels, so their channels are one
    // contiguous run of x: a single copy, with padding zeroed on either side.
    const float* src = x + ((n * g.h + h) * g.w + w0 + v.lo) * g.c;
    // (Most windows lie inside the image: skipping the empty memsets matters when C is small.)
    if (v.lo > 0) std::memset(dst, 0, sizeof(float) * v.lo * g.c);
    std::memcpy(dst + v.lo * g.c, src, sizeof(float) * (v.hi - v.lo) * g.c);
    if (v.hi < g.kw) std::memset(dst + v.hi * g.c, 0, sizeof(float) * (g.kw - v.hi) * g.c);
  }
}

// Input row (n, h) of dx gathers what the chunk's column lines [l0, l1) hold for it.
void col2im_input_row(const ConvGeometry& g, const float* col, int64_t l0, int64_t l1, int64_t n, int64_t h,
                      float* dx) {
  const int64_t k = g.k();
  float* dx_row = dx + (n * g.h + h) * g.w * g.c;
  for (int64_t kh = 0; kh < g.kh; ++kh) {
    // Output row oh reads input row h through kernel row kh when oh*SH - PH + kh == h.
    const int64_t t = h + g.ph - kh;
    if (t < 0 || t % g.sh != 0) continue;
    const int64_t oh = t / g.sh;
    const int64_t line = n * g.oh + oh;
    if (oh >= g.oh || line < l0 || line >= l1) continue;
    const float* col_line = col + (line - l0) * g.ow * k + kh * g.kw * g.c;
    for (int64_t ow = 0; ow < g.ow; ++ow) {
      const int64_t w0 = ow * g.sw - g.pw;
      const ValidColumns v = valid_columns(g, w0);
      const float* src = col_line + ow * k + v.lo * g.c;
      float* dst = dx_row + (w0 + v.lo) * g.c;
      const int64_t len = (v.hi - v.lo) * g.c;
      for (int64_t j = 0; j < len; ++j) dst[j] += src[j];
    }
  }
}

}  // namespace

void im2col_lines(const ConvGeometry& g, const float* x, int64_t l0, int64_t l1, float* col) {
  const int64_t k = g.k();
  parallel_rows((l1 - l0) * g.ow, kMinFloatsPerThread / k + 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) im2col_row(g, x, l0, r, col + r * k);
  });
}

namespace {
// The last dx row (n*H + h) that output line `line` reads; lines read rows in non-decreasing order.
int64_t last_input_row(const ConvGeometry& g, int64_t line) {
  const int64_t n = line / g.oh, oh = line % g.oh;
  return n * g.h + std::clamp<int64_t>(oh * g.sh - g.ph + g.kh - 1, 0, g.h - 1);
}
}  // namespace

int64_t col2im_lines(const ConvGeometry& g, const float* col, int64_t l0, int64_t l1, int64_t fresh_from, float* dx) {
  const int64_t n0 = l0 / g.oh, oh0 = l0 % g.oh;
  const int64_t first_read = n0 * g.h + std::clamp<int64_t>(oh0 * g.sh - g.ph, 0, g.h - 1);
  const int64_t row_begin = std::min(first_read, fresh_from);
  const int64_t row_end = std::max(last_input_row(g, l1 - 1) + 1, fresh_from);
  const int64_t row_floats = g.w * g.c;
  // One pass, each thread owning whole rows: zero the fresh ones, then gather into all of them.
  parallel_rows(row_end - row_begin, kMinFloatsPerThread / (row_floats * (g.kh + 1)) + 1,
                [&](int64_t begin, int64_t end) {
                  for (int64_t r = row_begin + begin; r < row_begin + end; ++r) {
                    if (r >= fresh_from) std::memset(dx + r * row_floats, 0, sizeof(float) * row_floats);
                    col2im_input_row(g, col, l0, l1, r / g.h, r % g.h, dx);
                  }
                });
  return row_end;
}

void zero_input_rows(const ConvGeometry& g, float* dx, int64_t begin_row, int64_t end_row) {
  const int64_t row_floats = g.w * g.c;
  parallel_rows(end_row - begin_row, kMinFloatsPerThread / row_floats + 1, [&](int64_t begin, int64_t end) {
    std::memset(dx + (begin_row + begin) * row_floats, 0, sizeof(float) * (end - begin) * row_floats);
  });
}

namespace {
std::mutex g_chunking_mutex;
ConvChunking g_chunking;
}  // namespace

ConvChunking conv_chunking() {
  std::lock_guard<std::mutex> lock(g_chunking_mutex);
  return g_chunking;
}

void set_conv_chunking(const ConvChunking& chunking) {
  std::lock_guard<std::mutex> lock(g_chunking_mutex);
  g_chunking = chunking;
}

int64_t conv_lines_per_chunk(const ConvGeometry& g) {
  const ConvChunking policy = conv_chunking();
  const int64_t line_bytes = g.ow * g.k() * static_cast<int64_t>(sizeof(float));
  const int64_t for_target = static_cast<int64_t>(policy.target_bytes) / line_bytes;
  const int64_t for_min_rows = (policy.min_rows + g.ow - 1) / g.ow;
  const int64_t under_max = static_cast<int64_t>(policy.max_bytes) / line_bytes;
  return std::clamp<int64_t>(std::min(std::max(for_target, for_min_rows), under_max), 1, g.lines());
}

namespace {
struct Workspace {
  float* data = nullptr;
  std::size_t floats = 0;
  ~Workspace() { host_free(data); }
};
}  // namespace

float* conv_workspace(std::size_t floats) {
  thread_local Workspace ws;
  if (ws.floats < floats) {
    host_free(ws.data);
    ws.data = nullptr;
    ws.floats = 0;
    ws.data = static_cast<float*>(host_alloc(floats * sizeof(float)));
    ws.floats = floats;
  }
  return ws.data;
}

}  // namespace ae::cpu
