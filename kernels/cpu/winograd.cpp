// Winograd F(m x m, 3x3) on the CPU: see kernels/cpu/winograd.h.
#include "kernels/cpu/winograd.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel_rows.h"
#include "kernels/cpu/winograd_epilogue.h"
#include "runtime/alloc.h"
#include "runtime/error.h"

namespace ae::cpu {
namespace {

// Transform matrices (Lavin and Gray 2016; interpolation points 0, +-1 for m = 2 and 0, +-1, +-2 for
// m = 4). Row-major: BT a x a, AT m x a, G a x 3.
struct Matrices {
  int m, a;
  float bt[36];
  float at[24];
  float g[18];
};

constexpr Matrices kF2 = {
    2, 4,
    {1, 0, -1, 0,  //
     0, 1, 1, 0,   //
     0, -1, 1, 0,  //
     0, 1, 0, -1},
    {1, 1, 1, 0,  //
     0, 1, -1, -1},
    {1, 0, 0,           //
     0.5f, 0.5f, 0.5f,  //
     0.5f, -0.5f, 0.5f,  //
     0, 0, 1},
};

constexpr Matrices kF4 = {
    4, 6,
    {4, 0, -5, 0, 1, 0,    //
     0, -4, -4, 1, 1, 0,   //
     0, 4, -4, -1, 1, 0,   //
     0, -2, -1, 2, 1, 0,   //
     0, 2, -1, -2, 1, 0,   //
     0, 4, 0, -5, 0, 1},
    {1, 1, 1, 1, 1, 0,   //
     0, 1, -1, 2, -2, 0,  //
     0, 1, 1, 4, 4, 0,    //
     0, 1, -1, 8, -8, 1},
    {1.0f / 4, 0, 0,                            //
     -1.0f / 6, -1.0f / 6, -1.0f / 6,           //
     -1.0f / 6, 1.0f / 6, -1.0f / 6,            //
     1.0f / 24, 1.0f / 12, 1.0f / 6,            //
     1.0f / 24, -1.0f / 12, 1.0f / 6,           //
     0, 0, 1},
};

// One convolution's tile transforms: the conv computed is out = conv(in) with `cin` input and `cout`
// output channels, padding (ph, pw), stride 1, 3x3. The chunk holds tiles [t0, t0 + tc).
struct Plan {
  int m, a;
  const float* bt;
  const float* at;
  int64_t n, h, w, cin;  // in [N,H,W,cin]
  int64_t oh, ow, cout;  // out [N,OH,OW,cout]
  int64_t ph, pw;
  int64_t tiles_h, tiles_w;
  const float* in;
  float* out;
  int64_t t0, tc;
  float* v;   // [a*a][tc][cin]
  float* mm;  // [a*a][tc][cout]
  // Forward of conv2d_batchnorm: the BatchNorm epilogue the output transform applies to each tile
  // row it writes (null: none; winograd_epilogue.cpp, compiled without contraction).
  const ConvEpilogue* ep;
  WinogradEpilogueRows epilogue;
};

struct WeightPlan {
  int a;
  const float* g;
  const float* w;  // [o,3,3,c]
  int64_t o, c;
  bool flip;
  float* u;  // [a*a][o][c]
};

// A per-thread scratch buffer (grow only) for the transforms of one tile.
struct Scratch {
  float* data = nullptr;
  std::size_t floats = 0;
  ~Scratch() { host_free(data); }
};
float* wino_scratch(std::size_t floats) {
  thread_local Scratch s;
  if (s.floats < floats) {
    host_free(s.data);
    s.data = nullptr;
    s.floats = 0;
    s.data = static_cast<float*>(host_alloc(floats * sizeof(float)));
    s.floats = floats;
  }
  return s.data;
}

namespace isa_plain {
#include "kernels/cpu/winograd_kernels.inc"
}  // namespace isa_plain

// The ISA variants (kernels/cpu/cpu_isa.h: AE_ISA_*_BEGIN).
AE_ISA_AVX2_BEGIN
namespace isa_avx2 {
#include "kernels/cpu/winograd_kernels.inc"
}  // namespace isa_avx2
AE_ISA_END

AE_ISA_AVX512_BEGIN
namespace isa_avx512 {
#include "kernels/cpu/winograd_kernels.inc"
}  // namespace isa_avx512
AE_ISA_END

struct Kernels {
  void (*input)(const Plan&, int64_t, int64_t);
  void (*output)(const Plan&, int64_t, int64_t);
  void (*weights)(const WeightPlan&, int64_t, int64_t);
};

Kernels kernels_for(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::avx512: return {isa_avx512::input_tiles, isa_avx512::output_tiles, isa_avx512::weight_rows};
    case CpuIsa::avx2: return {isa_avx2::input_tiles, isa_avx2::output_tiles, isa_avx2::weight_rows};
    case CpuIsa::plain: break;
  }
  return {isa_plain::input_tiles, isa_plain::output_tiles, isa_plain::weight_rows};
}

int blas_dim(int64_t v) {
  AE_CHECK(v <= INT_MAX, "winograd conv: GEMM dimension " << v << " exceeds OpenBLAS's 32-bit index range");
  return static_cast<int>(v);
}

// Settings: -1 = not chosen yet (read the environment on first use).
std::atomic<int> g_algo{-1};
std::atomic<int> g_tiles{-1};  // forward | backward_data << 4
std::mutex g_chunking_mutex;
WinogradChunking g_chunking;

thread_local ConvPathCounts t_counts;

// out = conv3x3(in) with the plan's geometry, w [o_w,3,3,c_w] transformed into u [a*a][o_w][c_w]
// first; flip: backward-data (the taps mirrored; u[xi] is then [cin][cout] rather than [cout][cin]).
// The transformed weight, V and M live in the calling thread's conv workspace (grow only): nothing is
// allocated per call but the output tensor.
void run(Plan p, const float* w, int64_t o_w, int64_t c_w, bool flip) {
  const CpuIsa isa = cpu_isa();
  const Kernels k = kernels_for(isa);
  p.epilogue = p.ep != nullptr && p.ep->mean != nullptr ? winograd_epilogue_rows(isa) : nullptr;
  const int a = p.a;
  const int64_t aa = a * a;
  p.tiles_h = (p.oh + p.m - 1) / p.m;
  p.tiles_w = (p.ow + p.m - 1) / p.m;
  const int64_t tiles = p.n * p.tiles_h * p.tiles_w;
  const WinogradChunking policy = winograd_chunking();
  const int64_t tile_bytes = aa * (p.cin + p.cout) * static_cast<int64_t>(sizeof(float));
  const int64_t for_packing = std::min<int64_t>(p.cout, static_cast<int64_t>(policy.max_bytes) / tile_bytes);
  const int64_t tc = std::clamp<int64_t>(
      std::max({static_cast<int64_t>(policy.target_bytes) / tile_bytes, policy.min_tiles, for_packing}), 1, tiles);

  const int64_t u_floats = aa * o_w * c_w;
  float* ws = conv_workspace(static_cast<std::size_t>(u_floats + aa * tc * (p.cin + p.cout)));
  float* u = ws;
  p.v = ws + u_floats;
  p.mm = p.v + aa * tc * p.cin;

  WeightPlan wp{a, p.m == 2 ? kF2.g : kF4.g, w, o_w, c_w, flip, u};
  parallel_rows(o_w, std::max<int64_t>(1, 8192 / (aa * c_w)), [&](int64_t b, int64_t e) { k.weights(wp, b, e); });

  // Forward: u[xi] is [cout = o_w][cin = c_w], multiplied transposed; backward-data: [cin][cout].
  const bool u_transposed = !flip;
  const int64_t min_tiles_per_thread = std::max<int64_t>(1, 4096 / (aa * std::max(p.cin, p.cout)));
  for (p.t0 = 0; p.t0 < tiles; p.t0 += tc) {
    const int64_t rows = std::min(tc, tiles - p.t0);
    p.tc = tc;
    parallel_rows(rows, min_tiles_per_thread, [&](int64_t b, int64_t e) { k.input(p, b, e); });
    // The a*a products are independent: with band threading (kernels/cpu/gemm.h) the threads take
    // whole products, each single-threaded, rather than splitting every small one.
    const auto product = [&](int64_t xi, bool serial) {
      (serial ? sgemm_serial : sgemm)("winograd conv", false, u_transposed, rows, p.cout, p.cin,
                                      p.v + xi * tc * p.cin, p.cin, u + xi * o_w * c_w, u_transposed ? p.cin : p.cout,
                                      0.0f, p.mm + xi * tc * p.cout, p.cout);
    };
    for (const int64_t v : {rows, p.cout, p.cin}) (void)blas_dim(v);  // the threads below must not throw
    if (gemm_threads() == GemmThreads::bands) {
      parallel_rows(aa, 1, [&](int64_t b, int64_t e) {
        for (int64_t xi = b; xi < e; ++xi) product(xi, true);
      });
    } else {
      for (int64_t xi = 0; xi < aa; ++xi) product(xi, false);
    }
    parallel_rows(rows, min_tiles_per_thread, [&](int64_t b, int64_t e) { k.output(p, b, e); });
  }
  ++t_counts.winograd[static_cast<int>(isa)];
  ++t_counts.winograd_m[p.m];
}

Plan base_plan(int m) {
  const Matrices& mx = m == 2 ? kF2 : kF4;
  Plan p{};
  p.m = mx.m;
  p.a = mx.a;
  p.bt = mx.bt;
  p.at = mx.at;
  return p;
}

}  // namespace

ConvAlgo conv_algo() {
  const int v = g_algo.load(std::memory_order_acquire);
  if (v >= 0) return static_cast<ConvAlgo>(v);
  ConvAlgo chosen = ConvAlgo::automatic;
  if (const char* env = std::getenv("AE_CPU_CONV"); env != nullptr && *env != '\0') {
    const std::string s = env;
    if (s == "im2col")
      chosen = ConvAlgo::im2col;
    else if (s == "winograd")
      chosen = ConvAlgo::winograd;
    else if (s == "direct")
      chosen = ConvAlgo::direct;
    else
      AE_CHECK(s == "auto",
               "AE_CPU_CONV: unknown algorithm '" << s << "' (expected auto, im2col, winograd or direct)");
  }
  int expected = -1;
  if (!g_algo.compare_exchange_strong(expected, static_cast<int>(chosen), std::memory_order_acq_rel))
    return static_cast<ConvAlgo>(expected);
  return chosen;
}

void set_conv_algo(ConvAlgo algo) { g_algo.store(static_cast<int>(algo), std::memory_order_release); }

WinogradTiles winograd_tiles() {
  int v = g_tiles.load(std::memory_order_acquire);
  if (v < 0) {
    WinogradTiles chosen;
    if (const char* env = std::getenv("AE_WINOGRAD_TILE"); env != nullptr && *env != '\0') {
      const std::string s = env;
      AE_CHECK(s == "2" || s == "4", "AE_WINOGRAD_TILE: expected 2 or 4, got '" << s << "'");
      chosen.forward = chosen.backward_data = s == "2" ? 2 : 4;
    }
    int expected = -1;
    const int encoded = chosen.forward | chosen.backward_data << 4;
    v = g_tiles.compare_exchange_strong(expected, encoded, std::memory_order_acq_rel) ? encoded : expected;
  }
  return WinogradTiles{v & 15, v >> 4};
}

void set_winograd_tiles(const WinogradTiles& tiles) {
  for (int m : {tiles.forward, tiles.backward_data})
    AE_CHECK(m == 2 || m == 4, "Winograd tile: F(m x m, 3x3) with m = 2 or 4, got " << m);
  g_tiles.store(tiles.forward | tiles.backward_data << 4, std::memory_order_release);
}

void set_winograd_tile(int m) { set_winograd_tiles(WinogradTiles{m, m}); }

WinogradChunking winograd_chunking() {
  std::lock_guard<std::mutex> lock(g_chunking_mutex);
  return g_chunking;
}

void set_winograd_chunking(const WinogradChunking& chunking) {
  std::lock_guard<std::mutex> lock(g_chunking_mutex);
  g_chunking = chunking;
}

ConvPathCounts& conv_path_counts() { return t_counts; }
void reset_conv_path_counts() { t_counts = ConvPathCounts(); }

bool winograd_applicable(const ConvGeometry& g) {
  return g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.ph <= 2 && g.pw <= 2;
}

bool winograd_profitable(const ConvGeometry& g, bool backward_data) {
  // Few channels: the GEMMs are too thin for the transforms to pay. Few output pixels: each element
  // of the transformed weight (a*a/9 times the weight: 4x for m = 4) is used by too few tiles, and
  // transforming and packing it costs more than the multiplications saved. Measured with
  // bench/bench_winograd (A/B in one process): at 7x7x512 batch 1 and 14x14x256 batch 1 (49 and 196
  // output pixels) im2col was faster (F(2x2) 2x slower at 49; 0.8-1.3x at 196), at 28x28x128 batch
  // 1 (784) F(2x2) took 0.6-0.7x its time, at 16x16x512 batch 1 (256) 0.55-0.8x; F(4x4), whose
  // transformed weight is twice as large again, was even with im2col at 7x7x512 batch 8 (392).
  const WinogradTiles tiles = winograd_tiles();
  const int64_t min_pixels = (backward_data ? tiles.backward_data : tiles.forward) == 2 ? 256 : 512;
  return g.c >= 16 && g.o >= 16 && g.n * g.oh * g.ow >= min_pixels;
}

void winograd_forward(const ConvGeometry& g, const float* x, const float* w, float* y, const ConvEpilogue& epilogue) {
  Plan p = base_plan(winograd_tiles().forward);
  p.n = g.n, p.h = g.h, p.w = g.w, p.cin = g.c;
  p.oh = g.oh, p.ow = g.ow, p.cout = g.o;
  p.ph = g.ph, p.pw = g.pw;
  p.in = x;
  p.out = y;
  p.ep = &epilogue;
  run(p, w, g.o, g.c, /*flip=*/false);
}

void winograd_backward_data(const ConvGeometry& g, const float* dy, const float* w, float* dx) {
  // dx[h,w,c] = sum over kh,kw,o of dy[h+ph-kh, w+pw-kw, o] * W[o,kh,kw,c]: a 3x3 stride-1
  // convolution of dy, padded by 2-ph / 2-pw, with the kernel flipped and the channels swapped.
  Plan p = base_plan(winograd_tiles().backward_data);
  p.n = g.n, p.h = g.oh, p.w = g.ow, p.cin = g.o;
  p.oh = g.h, p.ow = g.w, p.cout = g.c;
  p.ph = 2 - g.ph, p.pw = 2 - g.pw;
  p.in = dy;
  p.out = dx;
  run(p, w, g.o, g.c, /*flip=*/true);
}

}  // namespace ae::cpu
