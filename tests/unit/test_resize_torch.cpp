// resize_bilinear / resize_bilinear_antialias against PyTorch computed at test time: random
// images of awkward sizes, shrinking by more than 2x, enlarging, one axis only. Runs Debian's
// /usr/bin/python3 with torch; if it (or torch) is missing, the binary reports SKIPPED.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "runtime/philox.h"
#include "tests/support/check.h"
#include "train/preprocess.h"

namespace fs = std::filesystem;
using ae::img::ImageF;

namespace {

// One Python run for all cases (importing torch takes seconds): each manifest line is
// "h w oh ow antialias input output".
const char* kScript = R"PY(
import sys, numpy as np, torch, torch.nn.functional as F
for line in open(sys.argv[1]):
    h, w, oh, ow, aa, src, dst = line.split()
    h, w, oh, ow, aa = map(int, (h, w, oh, ow, aa))
    x = np.fromfile(src, dtype='<f4').reshape(1, h, w, 3)
    t = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    y = F.interpolate(t, size=(oh, ow), mode='bilinear', align_corners=False, antialias=bool(aa))
    y.permute(0, 2, 3, 1).contiguous().numpy().astype('<f4').tofile(dst)
)PY";

bool torch_available() {
  return std::system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") == 0;
}

ImageF random_image(int h, int w, uint64_t seed) {
  ImageF im;
  im.height = h;
  im.width = w;
  for (int i = 0; i < h * w * 3; ++i) im.rgb.push_back(ae::philox::uniform(seed, uint64_t(i)));
  return im;
}

std::vector<float> read_floats(const std::string& path, std::size_t n) {
  std::vector<float> v(n);
  std::ifstream f(path, std::ios::binary);
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(n * sizeof(float)));
  REQUIRE(f.gcount() == std::streamsize(n * sizeof(float)));
  return v;
}

struct Case {
  int h, w, oh, ow;
};
const Case kCases[] = {
    {375, 500, 224, 224},  // a photo squashed to the eval size (shrinks 2.2x on one axis)
    {97, 61, 13, 7},       // shrinks by ~7x and ~9x
    {9, 17, 23, 40},       // enlarges
    {31, 47, 31, 20},      // one axis only
    {1, 1, 3, 2},          // a single pixel
    {2, 5, 1, 1},
};

}  // namespace

TEST_CASE("resize_bilinear and resize_bilinear_antialias equal torch F.interpolate on random images") {
  if (!torch_available()) {
    ae::test::skip_binary("/usr/bin/python3 with torch and numpy is not available");
    return;
  }
  const fs::path dir = fs::path(ae::test::build_dir()) / "test-resize-torch";
  fs::create_directories(dir);
  std::vector<ImageF> inputs;
  std::ofstream manifest(dir / "manifest.txt");
  for (std::size_t i = 0; i < std::size(kCases); ++i) {
    const Case& c = kCases[i];
    inputs.push_back(random_image(c.h, c.w, 1 + i));
    const std::string in = (dir / ("in" + std::to_string(i) + ".f32")).string();
    std::ofstream(in, std::ios::binary)
        .write(reinterpret_cast<const char*>(inputs.back().rgb.data()),
               std::streamsize(inputs.back().rgb.size() * sizeof(float)));
    for (int aa : {0, 1}) {
      const std::string out = (dir / ("out" + std::to_string(i) + "_" + std::to_string(aa) + ".f32")).string();
      fs::remove(out);
      manifest << c.h << " " << c.w << " " << c.oh << " " << c.ow << " " << aa << " " << in << " " << out << "\n";
    }
  }
  manifest.close();
  std::ofstream(dir / "resize.py") << kScript;
  const std::string cmd = "/usr/bin/python3 '" + (dir / "resize.py").string() + "' '" + (dir / "manifest.txt").string() + "'";
  REQUIRE(std::system(cmd.c_str()) == 0);

  for (std::size_t i = 0; i < std::size(kCases); ++i) {
    const Case& c = kCases[i];
    for (int aa : {0, 1}) {
      const std::string what = std::to_string(c.h) + "x" + std::to_string(c.w) + " -> " + std::to_string(c.oh) + "x" +
                               std::to_string(c.ow) + (aa ? " antialias" : " plain");
      CAPTURE(what);
      const std::vector<float> ref =
          read_floats((dir / ("out" + std::to_string(i) + "_" + std::to_string(aa) + ".f32")).string(),
                      std::size_t(c.oh) * c.ow * 3);
      const ImageF out = aa ? ae::img::resize_bilinear_antialias(inputs[i], c.oh, c.ow)
                            : ae::img::resize_bilinear(inputs[i], c.oh, c.ow);
      const ae::test::CompareResult r =
          ae::test::compare(out.rgb, std::vector<double>(ref.begin(), ref.end()), {3e-7, 1e-6, 1e-12}, "resize");
      MESSAGE(what << ": max |diff| " << r.max_abs_err);
      AE_REQUIRE_OK(r);
    }
  }
}
