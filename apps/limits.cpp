// Options shared by the commands that read untrusted input (README "Bad input").
#include "apps/commands.h"
#include "train/image.h"

namespace ae::app {

void add_max_pixels_option(CLI::App& command) {
  command
      .add_option_function<int64_t>(
          "--max-pixels", [](const int64_t& pixels) { img::set_max_pixels(pixels); },
          "Largest photo decoded, in pixels (width x height; default " + std::to_string(img::kDefaultMaxPixels) +
              ", above every single-shot camera): a larger header is refused before any memory is allocated")
      ->check(CLI::Range(int64_t{1}, img::kMaxPixelsCeiling));
}

}  // namespace ae::app
