// Winograd F(2x2,3x3) and F(4x4,3x3) on the CPU (kernels/cpu/winograd.h): forward and backward-data
// against double-precision loops over awkward shapes, for every tile size and every instruction set
// this machine runs (each path checked to have run), with chunks straddling images, the kernels also
// called on their own with inputs in exact-size buffers (AddressSanitizer's red zone right after the
// last element: scripts/sanitize.sh runs this file) and outputs between red zones; the error on
// ResNet-18-like layers measured against the double reference and bounded; backward-data against
// finite differences; the dispatch (automatic, forced im2col, forced Winograd) and its settings.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cpu/winograd.h"
#include "kernels/ops.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"

namespace {

using ae::Shape;
using ae::Tensor;
using ae::cpu::ConvAlgo;
using ae::cpu::CpuIsa;
using ae::ops::Conv2dParams;
namespace test = ae::test;

struct Case {
  int64_t n, h, w, c, o;
  int ph, pw;
  Conv2dParams p() const { return Conv2dParams{3, 3, 1, 1, ph, pw}; }
  int64_t oh() const { return h + 2 * ph - 2; }
  int64_t ow() const { return w + 2 * pw - 2; }
  Shape x_shape() const { return {n, h, w, c}; }
  Shape w_shape() const { return {o, 3, 3, c}; }
  Shape y_shape() const { return {n, oh(), ow(), o}; }
  std::string str() const {
    std::ostringstream os;
    os << "x [" << n << "," << h << "," << w << "," << c << "] O " << o << " pad " << ph << "x" << pw;
    return os.str();
  }
};

// y[n,oh,ow,o] = sum x[n, oh-ph+kh, ow-pw+kw, c] * w[o,kh,kw,c], in double.
std::vector<double> ref_forward(const Case& k, const std::vector<double>& x, const std::vector<double>& wt) {
  std::vector<double> y(static_cast<std::size_t>(ae::shape_numel(k.y_shape())), 0.0);
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t oh = 0; oh < k.oh(); ++oh)
      for (int64_t ow = 0; ow < k.ow(); ++ow)
        for (int64_t o = 0; o < k.o; ++o) {
          double s = 0;
          for (int64_t kh = 0; kh < 3; ++kh)
            for (int64_t kw = 0; kw < 3; ++kw) {
              const int64_t h = oh - k.ph + kh, w = ow - k.pw + kw;
              if (h < 0 || h >= k.h || w < 0 || w >= k.w) continue;
              const double* xs = &x[static_cast<std::size_t>(((n * k.h + h) * k.w + w) * k.c)];
              const double* ws = &wt[static_cast<std::size_t>(((o * 3 + kh) * 3 + kw) * k.c)];
              for (int64_t c = 0; c < k.c; ++c) s += xs[c] * ws[c];
            }
          y[static_cast<std::size_t>(((n * k.oh() + oh) * k.ow() + ow) * k.o + o)] = s;
        }
  return y;
}

// dx[n,h,w,c] = sum over the output pixels that read (h, w) of dy * w, in double.
std::vector<double> ref_backward_data(const Case& k, const std::vector<double>& dy, const std::vector<double>& wt) {
  std::vector<double> dx(static_cast<std::size_t>(ae::shape_numel(k.x_shape())), 0.0);
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t oh = 0; oh < k.oh(); ++oh)
      for (int64_t ow = 0; ow < k.ow(); ++ow)
        for (int64_t kh = 0; kh < 3; ++kh)
          for (int64_t kw = 0; kw < 3; ++kw) {
            const int64_t h = oh - k.ph + kh, w = ow - k.pw + kw;
            if (h < 0 || h >= k.h || w < 0 || w >= k.w) continue;
            double* dxs = &dx[static_cast<std::size_t>(((n * k.h + h) * k.w + w) * k.c)];
            const double* dys = &dy[static_cast<std::size_t>(((n * k.oh() + oh) * k.ow() + ow) * k.o)];
            for (int64_t o = 0; o < k.o; ++o) {
              const double* ws = &wt[static_cast<std::size_t>(((o * 3 + kh) * 3 + kw) * k.c)];
              for (int64_t c = 0; c < k.c; ++c) dxs[c] += dys[o] * ws[c];
            }
          }
  return dx;
}

// Settings for one scope, restored afterwards even when a check throws.
class Settings {
 public:
  Settings(ConvAlgo algo, int tile, CpuIsa isa, ae::cpu::WinogradChunking chunking = {})
      : algo_(ae::cpu::conv_algo()), tiles_(ae::cpu::winograd_tiles()), isa_(ae::cpu::cpu_isa()),
        chunking_(ae::cpu::winograd_chunking()) {
    ae::cpu::set_conv_algo(algo);
    ae::cpu::set_winograd_tile(tile);
    ae::cpu::set_cpu_isa(isa);
    ae::cpu::set_winograd_chunking(chunking);
  }
  ~Settings() {
    ae::cpu::set_conv_algo(algo_);
    ae::cpu::set_winograd_tiles(tiles_);
    ae::cpu::set_cpu_isa(isa_);
    ae::cpu::set_winograd_chunking(chunking_);
  }
  Settings(const Settings&) = delete;
  Settings& operator=(const Settings&) = delete;

 private:
  ConvAlgo algo_;
  ae::cpu::WinogradTiles tiles_;
  CpuIsa isa_;
  ae::cpu::WinogradChunking chunking_;
};

std::vector<CpuIsa> available_isas() {
  std::vector<CpuIsa> out;
  for (CpuIsa isa : {CpuIsa::plain, CpuIsa::avx2, CpuIsa::avx512})
    if (ae::cpu::cpu_isa_available(isa)) out.push_back(isa);
  return out;
}

// Awkward shapes: 1x1 and odd spatial sizes, output sides that are not multiples of 2 or 4,
// paddings 0..2 (unequal too), channel counts that are not multiples of a vector.
std::vector<Case> sweep() {
  return {
      {1, 1, 1, 3, 2, 1, 1},    {2, 2, 3, 1, 5, 1, 2},    {1, 5, 7, 5, 3, 1, 1},   {2, 9, 4, 17, 7, 0, 0},
      {3, 7, 5, 3, 4, 2, 2},    {1, 13, 17, 19, 33, 1, 0}, {2, 6, 6, 64, 16, 1, 1}, {1, 11, 3, 7, 9, 2, 1},
      {1, 4, 4, 33, 65, 0, 1},
  };
}

// Per-element tolerance of the sweep (values of size ~1, up to 9*65 terms); the aggregate error of
// Winograd is bounded separately, against its measured size, below.
const test::Tolerance kSweepTol{/*atol=*/5e-4, /*rtol=*/1e-4, /*max_nmse=*/1e-10};

void check_case(const Case& k, uint64_t seed) {
  const Tensor x = test::random_tensor(k.x_shape(), seed);
  const Tensor w = test::random_tensor(k.w_shape(), seed + 1);
  const Tensor dy = test::random_tensor(k.y_shape(), seed + 2);
  const auto xd = test::to_double(x), wd = test::to_double(w), dyd = test::to_double(dy);
  const Tensor y = ae::ops::conv2d_forward(k.p(), x, w);
  AE_REQUIRE_OK(test::compare(y, ref_forward(k, xd, wd), kSweepTol, "forward " + k.str()));
  const Tensor dx = ae::ops::conv2d_backward_data(k.p(), dy, w, k.x_shape());
  AE_REQUIRE_OK(test::compare(dx, ref_backward_data(k, dyd, wd), kSweepTol, "backward_data " + k.str()));
  // The kernels on their own: inputs in exact-size blocks, outputs between red zones, pre-filled
  // with NaN: every element written, nothing around it, the same bits as through conv2d_*.
  const ae::ConvGeometry g(k.p(), k.x_shape(), k.o);
  const std::vector<float> xe = test::exact_copy(x), we = test::exact_copy(w), dye = test::exact_copy(dy);
  test::RedZoned ye(ae::shape_numel(k.y_shape())), dxe(ae::shape_numel(k.x_shape()));
  ae::cpu::winograd_forward(g, xe.data(), we.data(), ye.data());
  ae::cpu::winograd_backward_data(g, dye.data(), we.data(), dxe.data());
  for (const test::RedZoned* out : {&ye, &dxe}) {
    CAPTURE(out == &ye ? "forward" : "backward_data");
    CHECK(out->guard_damage() == 0);
    CHECK(out->unwritten() == 0);
  }
  CHECK(ye.same_bits(y));
  CHECK(dxe.same_bits(dx));
}

// max |got - ref| / max |ref| and sum (got-ref)^2 / sum ref^2.
struct Err {
  double rel_max = 0, nmse = 0;
};
Err error_of(const Tensor& got, const std::vector<double>& ref) {
  const std::vector<float> g = got.to_vector();
  double max_err = 0, max_ref = 0, se = 0, sr = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double e = static_cast<double>(g[i]) - ref[i];
    max_err = std::max(max_err, std::fabs(e));
    max_ref = std::max(max_ref, std::fabs(ref[i]));
    se += e * e;
    sr += ref[i] * ref[i];
  }
  return {max_err / max_ref, se / sr};
}

}  // namespace

TEST_CASE("winograd: forward and backward-data match double loops for every tile size and instruction set") {
  const std::vector<CpuIsa> isas = available_isas();
  REQUIRE(isas.front() == CpuIsa::plain);
  for (int tile : {2, 4})
    for (CpuIsa isa : isas)
      for (int64_t min_tiles : {int64_t{96}, int64_t{1}}) {
        // min_tiles 1 with a tiny byte target: one or two tiles per chunk, chunks straddling images.
        const ae::cpu::WinogradChunking chunking{min_tiles == 1 ? std::size_t{1} : std::size_t{4} << 20, min_tiles,
                                                 min_tiles == 1 ? std::size_t{1} : std::size_t{32} << 20};
        Settings s(ConvAlgo::winograd, tile, isa, chunking);
        CAPTURE(tile);
        CAPTURE(ae::cpu::cpu_isa_name(isa));
        CAPTURE(min_tiles);
        ae::cpu::reset_conv_path_counts();
        uint64_t seed = 1000;
        for (const Case& k : sweep()) {
          CAPTURE(k.str());
          check_case(k, seed);
          seed += 3;
        }
        // Every case took the Winograd path, forward and backward, with this ISA and tile size
        // (twice: through conv2d_* and on its own).
        const ae::cpu::ConvPathCounts& counts = ae::cpu::conv_path_counts();
        const int64_t calls = 4 * static_cast<int64_t>(sweep().size());
        CHECK(counts.winograd[static_cast<int>(isa)] == calls);
        CHECK(counts.winograd_m[tile] == calls);
        CHECK(counts.im2col == 0);
      }
}

TEST_CASE("winograd: error on ResNet-18-like layers, measured against double loops and bounded") {
  // Post-ReLU activations in [0, 1), He-initialised weights (std sqrt(2 / (9 C))), batch 1; the
  // output sides (14 and 7 + pad) give partial tiles for both tile sizes.
  struct Layer {
    Case k;
    const char* name;
  };
  const Layer layers[] = {{{1, 14, 14, 64, 64, 1, 1}, "14x14x64->64"}, {{1, 7, 7, 256, 32, 1, 1}, "7x7x256->32"}};
  // Bounds: about 10x what was measured on an AVX-512 machine (printed below). F(4x4,3x3) adds
  // and subtracts values up to 5x and 8x larger in its transforms, so its error is larger.
  const double max_rel_bound[] = {0, 0, 2e-6, 0, 2e-5};
  const double nmse_bound[] = {0, 0, 1e-12, 0, 2e-11};
  uint64_t seed = 7;
  for (const Layer& l : layers) {
    const Case& k = l.k;
    const Tensor x = test::random_tensor(k.x_shape(), seed++, 0.0f, 1.0f);
    const float wstd = std::sqrt(2.0f / (9.0f * static_cast<float>(k.c)));
    const Tensor w = test::random_tensor(k.w_shape(), seed++, -wstd * std::sqrt(3.0f), wstd * std::sqrt(3.0f));
    const Tensor dy = test::random_tensor(k.y_shape(), seed++);
    const auto xd = test::to_double(x), wd = test::to_double(w), dyd = test::to_double(dy);
    const std::vector<double> y_ref = ref_forward(k, xd, wd), dx_ref = ref_backward_data(k, dyd, wd);
    Err im2col_fwd;
    {
      Settings s(ConvAlgo::im2col, 2, ae::cpu::cpu_isa_supported());
      im2col_fwd = error_of(ae::ops::conv2d_forward(k.p(), x, w), y_ref);
    }
    for (int tile : {2, 4}) {
      Settings s(ConvAlgo::winograd, tile, ae::cpu::cpu_isa_supported());
      const Err fwd = error_of(ae::ops::conv2d_forward(k.p(), x, w), y_ref);
      const Err bwd = error_of(ae::ops::conv2d_backward_data(k.p(), dy, w, k.x_shape()), dx_ref);
      MESSAGE("F(" << tile << "x" << tile << ",3x3) " << std::string(l.name) << ": forward max rel " << fwd.rel_max << " nmse "
                   << fwd.nmse << "; backward-data max rel " << bwd.rel_max << " nmse " << bwd.nmse
                   << "; im2col forward max rel " << im2col_fwd.rel_max << " nmse " << im2col_fwd.nmse);
      CHECK(fwd.rel_max < max_rel_bound[tile]);
      CHECK(fwd.nmse < nmse_bound[tile]);
      CHECK(bwd.rel_max < max_rel_bound[tile]);
      CHECK(bwd.nmse < nmse_bound[tile]);
    }
  }
}

TEST_CASE("winograd: backward-data matches central finite differences of the Winograd forward") {
  const std::vector<Case> cases = {{1, 5, 6, 3, 4, 1, 1}, {2, 4, 3, 2, 3, 0, 2}};
  const test::Tolerance fd_tol{/*atol=*/2e-3, /*rtol=*/1e-3, /*max_nmse=*/1e-6};
  for (int tile : {2, 4}) {
    Settings s(ConvAlgo::winograd, tile, ae::cpu::cpu_isa_supported());
    uint64_t seed = 50;
    for (const Case& k : cases) {
      CAPTURE(k.str());
      CAPTURE(tile);
      Tensor x = test::random_tensor(k.x_shape(), seed++);
      const Tensor w = test::random_tensor(k.w_shape(), seed++);
      const Tensor r = test::random_tensor(k.y_shape(), seed++);
      const auto loss = [&] { return test::weighted_sum(ae::ops::conv2d_forward(k.p(), x, w), r); };
      ae::cpu::reset_conv_path_counts();
      const Tensor dx = ae::ops::conv2d_backward_data(k.p(), r, w, k.x_shape());
      AE_REQUIRE_OK(test::compare(dx, test::numeric_gradient(x, loss), fd_tol, "dx vs finite differences"));
      CHECK(ae::cpu::conv_path_counts().im2col == 0);
    }
  }
}

TEST_CASE("winograd: dispatch follows the setting; automatic picks Winograd only for 3x3 stride 1 that pays") {
  const Case big{1, 24, 24, 32, 32, 1, 1};  // 576 output pixels, 32 channels: profitable
  const Case thin{1, 24, 24, 3, 32, 1, 1};  // 3 input channels: not
  const Case small{1, 8, 8, 64, 64, 1, 1};  // 64 output pixels: not (direct or im2col)
  const Tensor xb = test::random_tensor(big.x_shape(), 1), wb = test::random_tensor(big.w_shape(), 2);
  const Tensor xt = test::random_tensor(thin.x_shape(), 3), wt = test::random_tensor(thin.w_shape(), 4);
  const Tensor xs = test::random_tensor(small.x_shape(), 5), ws = test::random_tensor(small.w_shape(), 6);
  const Conv2dParams strided{3, 3, 2, 2, 1, 1};
  const auto counts = [] { return ae::cpu::conv_path_counts(); };
  const auto winograd_calls = [](const ae::cpu::ConvPathCounts& c) {
    return c.winograd[0] + c.winograd[1] + c.winograd[2];
  };
  {
    Settings s(ConvAlgo::automatic, 4, ae::cpu::cpu_isa_supported());
    ae::cpu::reset_conv_path_counts();
    ae::ops::conv2d_forward(big.p(), xb, wb);
    CHECK(winograd_calls(counts()) == 1);
    ae::ops::conv2d_forward(thin.p(), xt, wt);
    ae::ops::conv2d_forward(small.p(), xs, ws);
    ae::ops::conv2d_forward(strided, xb, wb);
    CHECK(winograd_calls(counts()) == 1);
    // With AVX-512 the direct forward (kernels/cpu/conv_direct.h) takes `small` (64 output pixels)
    // and the strided one (144 pixels, K 288); `thin` has too few channels for it.
    const int64_t direct = ae::cpu::cpu_isa() == CpuIsa::avx512 ? 2 : 0;
    CHECK(counts().direct_dot == direct);
    CHECK(counts().direct_broadcast == 0);  // `small` goes to the dot form first; the others have 32 channels out
    CHECK(counts().im2col == 3 - direct);
  }
  {
    Settings s(ConvAlgo::im2col, 4, ae::cpu::cpu_isa_supported());
    ae::cpu::reset_conv_path_counts();
    ae::ops::conv2d_forward(big.p(), xb, wb);
    ae::ops::conv2d_backward_data(big.p(), ae::ops::conv2d_forward(big.p(), xb, wb), wb, big.x_shape());
    CHECK(winograd_calls(counts()) == 0);
    CHECK(counts().im2col == 3);
  }
  {
    Settings s(ConvAlgo::winograd, 2, ae::cpu::cpu_isa_supported());
    ae::cpu::reset_conv_path_counts();
    ae::ops::conv2d_forward(thin.p(), xt, wt);  // forced: also where it does not pay
    ae::ops::conv2d_forward(strided, xb, wb);   // but never where it does not apply
    ae::ops::conv2d_backward_weight(big.p(), xb, ae::ops::conv2d_forward(big.p(), xb, wb), big.w_shape());
    CHECK(counts().winograd_m[2] == 2);
    CHECK(counts().im2col == 2);
  }
}

TEST_CASE("winograd: forward and backward-data take their own tile sizes") {
  const Case k{2, 24, 20, 32, 48, 1, 1};  // 960 output pixels: profitable for both tile sizes
  const Tensor x = test::random_tensor(k.x_shape(), 11), w = test::random_tensor(k.w_shape(), 12);
  const Tensor dy = test::random_tensor(k.y_shape(), 13);
  const auto xd = test::to_double(x), wd = test::to_double(w), dyd = test::to_double(dy);
  for (const ae::cpu::WinogradTiles tiles : {ae::cpu::WinogradTiles{2, 4}, ae::cpu::WinogradTiles{4, 2}}) {
    CAPTURE(tiles.forward);
    Settings s(ConvAlgo::automatic, 2, ae::cpu::cpu_isa_supported());
    ae::cpu::set_winograd_tiles(tiles);
    ae::cpu::reset_conv_path_counts();
    AE_REQUIRE_OK(test::compare(ae::ops::conv2d_forward(k.p(), x, w), ref_forward(k, xd, wd), kSweepTol, "forward"));
    CHECK(ae::cpu::conv_path_counts().winograd_m[tiles.forward] == 1);
    AE_REQUIRE_OK(test::compare(ae::ops::conv2d_backward_data(k.p(), dy, w, k.x_shape()), ref_backward_data(k, dyd, wd),
                                kSweepTol, "backward_data"));
    CHECK(ae::cpu::conv_path_counts().winograd_m[tiles.backward_data] == 1);
    CHECK(ae::cpu::conv_path_counts().winograd_m[2] + ae::cpu::conv_path_counts().winograd_m[4] == 2);
  }
}

TEST_CASE("winograd: settings are validated") {
  test::require_error([] { ae::cpu::set_winograd_tile(3); }, {"Winograd tile", "2 or 4", "3"});
  test::require_error([] { ae::cpu::set_winograd_tiles({2, 6}); }, {"Winograd tile", "2 or 4", "6"});
  test::require_error([] { ae::cpu::parse_cpu_isa("sse9", "AE_CPU_ISA"); }, {"AE_CPU_ISA", "sse9", "avx512"});
  CHECK(ae::cpu::parse_cpu_isa("avx2", "x") == CpuIsa::avx2);
  // The plain path runs everywhere; an instruction set the machine lacks is refused, not downgraded.
  CHECK(ae::cpu::cpu_isa_available(CpuIsa::plain));
  for (CpuIsa isa : {CpuIsa::avx2, CpuIsa::avx512})
    if (!ae::cpu::cpu_isa_available(isa))
      test::require_error([isa] { ae::cpu::set_cpu_isa(isa); }, {"instruction set", ae::cpu::cpu_isa_name(isa)});
}
