// aesthete: personalised photo aesthetics. Entry point; every subcommand lives in its own file.
#include <cstdio>
#include <cstdlib>
#include <exception>

#include "apps/commands.h"
#include "kernels/backend.h"
#include "runtime/error.h"
#include "runtime/log.h"
#ifdef AE_WITH_CUDA
#include "kernels/cuda/conv_math.h"
#include "kernels/cuda/runtime.h"
#endif

namespace ae::app {

namespace {
int g_exit_code = 0;
std::vector<std::string> g_command_line;
}

const std::vector<std::string>& command_line() { return g_command_line; }

namespace {
std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_of(" '\"\\$`!*?;&|<>()") == std::string::npos) return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}
}  // namespace

std::string shell_command_line() {
  std::string out;
  for (const auto& a : g_command_line) out += (out.empty() ? "" : " ") + shell_quote(a);
  return out;
}

std::string resume_command_line() {
  std::string out;
  bool has_resume = false;
  for (std::size_t i = 0; i < g_command_line.size(); ++i) {
    const std::string& a = g_command_line[i];
    if (a == "--stop-after-steps") {  // the testing flag is not part of the run
      ++i;
      continue;
    }
    if (a.rfind("--stop-after-steps=", 0) == 0) continue;
    has_resume |= a == "--resume";
    out += (out.empty() ? "" : " ") + shell_quote(a);
  }
  return has_resume ? out : out + " --resume";
}

void set_exit_code(int code) { g_exit_code = code; }
int exit_code() { return g_exit_code; }

// Brings up the CUDA backend on first use (cudart start-up costs time; commands that never touch
// a device do not pay it). Returns why no device is usable, or "" when one is.
static std::string cuda_unusable_reason() {
#ifdef AE_WITH_CUDA
  const cuda::DeviceInfo& info = cuda::initialize();
  if (info.usable) return "";
  return info.reason;
#else
  return "this build has no CUDA backend (nvcc was not found when it was configured)";
#endif
}

void apply_conv_math(const std::string& text, const std::string& where) {
#ifdef AE_WITH_CUDA
  cuda::set_conv_math(cuda::parse_conv_math(text, where));
#else
  AE_CHECK(text == "f32", where << " " << text << ": this build has no CUDA backend, so convolutions run in f32 on the CPU");
#endif
}

int parse_input_size(const std::string& s, const std::map<std::string, std::string>& metadata) {
  if (s == "auto") {
    const auto it = metadata.find("input_size");
    return it == metadata.end() ? 224 : parse_input_size(it->second, {});
  }
  if (s == "native") return 0;
  char* end = nullptr;
  const long v = std::strtol(s.c_str(), &end, 10);
  AE_CHECK(end != s.c_str() && *end == '\0' && v >= 32 && v <= 4096,
           "--size must be native or a side in 32..4096, got '" << s << "'");
  return static_cast<int>(v);
}

Device resolve_device(const std::string& text) {
  if (text == "auto") {
    const std::string why = cuda_unusable_reason();
    if (why.empty() && ops::cuda_backend() != nullptr) return Device::cuda(0);
    AE_INFO("no usable CUDA device (" << why << "): running on the CPU");
    return Device::cpu();
  }
  const Device d = parse_device(text);
  if (d.is_cuda()) {
    const std::string why = cuda_unusable_reason();
    AE_CHECK(why.empty() && ops::cuda_backend() != nullptr,
             "--device " << text << ": no usable CUDA device: " << why << " (use --device cpu or auto)");
  }
  return d;
}

}  // namespace ae::app

int main(int argc, char** argv) {
  ae::app::g_command_line.assign(argv, argv + argc);
  CLI::App app{"aesthete: photo aesthetics with ResNet-18, from scratch in C++ and CUDA", "aesthete"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "aesthete 0.1");
  bool quiet = false, verbose = false;
  std::string conv_math;
  app.add_flag("-q,--quiet", quiet, "Only print results and errors");
  app.add_flag("-v,--verbose", verbose, "Print debugging detail");
  app.add_option("--conv-math", conv_math,
                 "CUDA convolution arithmetic: f32 (default), tf32 or bf16 (tensor cores, f32 accumulation)");
  // Global options take effect before the chosen subcommand runs.
  app.parse_complete_callback([&] {
    if (quiet) ae::set_log_level(ae::LogLevel::warn);
    if (verbose) ae::set_log_level(ae::LogLevel::debug);
    if (!conv_math.empty()) ae::app::apply_conv_math(conv_math, "--conv-math");
  });
  ae::app::add_score_command(app);
  ae::app::add_inspect_command(app);
  ae::app::add_convert_command(app);
  ae::app::add_train_command(app);
  ae::app::add_make_dataset_command(app);
  ae::app::add_bench_command(app);
  ae::app::add_personalise_command(app);
  ae::app::add_saliency_command(app);
  ae::app::add_enhance_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return ae::app::exit_code();
}
