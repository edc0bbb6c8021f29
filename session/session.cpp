#include "session/session.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <csignal>
#include <cstdlib>
#include <filesystem>

#include "kernels/backend.h"
#include "model/resnet18.h"
#include "runtime/error.h"
#ifdef AE_WITH_CUDA
#include "kernels/cuda/conv_math.h"
#include "kernels/cuda/runtime.h"
#endif

namespace ae::session {

bool cuda_built() {
#ifdef AE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::string cuda_unusable_reason() {
#ifdef AE_WITH_CUDA
  const cuda::DeviceInfo& info = cuda::initialize();
  if (info.usable) return "";
  return info.reason;
#else
  return "this build has no CUDA backend (nvcc was not found when it was configured)";
#endif
}

namespace {
// The process's CUDA device (one per process, chosen by the CUDA runtime: --device cuda:N, else
// the node-local rank under mpirun/srun, else 0; kernels/cuda/runtime.h).
Device process_cuda_device() {
#ifdef AE_WITH_CUDA
  return Device::cuda(cuda::initialize().index);
#else
  return Device::cuda(0);
#endif
}
}  // namespace

Device resolve_device(const std::string& text, const std::string& flag) {
  if (text == "auto") {
    const std::string why = cuda_unusable_reason();
    if (why.empty() && ops::cuda_backend() != nullptr) return process_cuda_device();
    AE_INFO("no usable CUDA device (" << why << "): running on the CPU");
    return Device::cpu();
  }
  const Device d = parse_device(text);
  if (d.is_cuda()) {
#ifdef AE_WITH_CUDA
    // An explicit index is a request the CUDA runtime takes before it starts (or must agree with).
    if (text.rfind("cuda:", 0) == 0) cuda::request_device(d.index);
#endif
    const std::string why = cuda_unusable_reason();
    AE_CHECK(why.empty() && ops::cuda_backend() != nullptr,
             flag << " " << text << ": no usable CUDA device: " << why << " (use " << flag << " cpu or auto)");
    return process_cuda_device();
  }
  return d;
}

void set_conv_math(const std::string& text, const std::string& where) {
#ifdef AE_WITH_CUDA
  cuda::set_conv_math(cuda::parse_conv_math(text, where));
#else
  AE_CHECK(text == "f32", where << " " << text << ": this build has no CUDA backend, so convolutions run in f32 on the CPU");
#endif
}

std::string conv_math() {
#ifdef AE_WITH_CUDA
  return cuda::conv_math_name(cuda::conv_math());
#else
  return "f32";
#endif
}

void set_activations(const std::string& text, const std::string& where) {
  model::set_default_activation_dtype(model::parse_activation_dtype(text, where));
}

std::string activations() { return dtype_name(model::default_activation_dtype()); }

LogLevel parse_log_level(const std::string& text, const std::string& where) {
  for (LogLevel l : {LogLevel::debug, LogLevel::info, LogLevel::warn, LogLevel::error, LogLevel::quiet})
    if (text == log_level_name(l)) return l;
  AE_FAIL(where << " must be debug, info, warn, error or quiet, got '" << text << "'");
}

const char* log_level_name(LogLevel level) {
  switch (level) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warn: return "warn";
    case LogLevel::error: return "error";
    case LogLevel::quiet: return "quiet";
  }
  return "?";
}

int parse_input_size(const std::string& s, const std::map<std::string, std::string>& metadata, const std::string& flag) {
  if (s == "auto") {
    const auto it = metadata.find("input_size");
    return it == metadata.end() ? 224 : parse_input_size(it->second, {}, flag);
  }
  if (s == "native") return 0;
  char* end = nullptr;
  const long v = std::strtol(s.c_str(), &end, 10);
  AE_CHECK(end != s.c_str() && *end == '\0' && v >= 32 && v <= 4096,
           flag << " must be native or a side in 32..4096, got '" << s << "'");
  return static_cast<int>(v);
}

double stars(double z, const model::TargetNorm& norm) { return std::clamp(z * norm.std + norm.mean, 1.0, 5.0); }

std::vector<std::string> photos_in_folder(const std::string& folder) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) throw Error("'" + folder + "' is not a folder", ErrorKind::file);
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator(folder)) {
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (e.is_regular_file() && (ext == ".jpg" || ext == ".jpeg" || ext == ".png")) found.push_back(e.path().string());
  }
  std::sort(found.begin(), found.end());
  return found;
}

std::string format_score(float z) {
  char buf[64];  // the longest float in shortest fixed notation, -1e-45, takes 48 characters
  const std::to_chars_result r = std::to_chars(buf, buf + sizeof buf, z, std::chars_format::fixed);
  AE_CHECK(r.ec == std::errc(), "format_score: " << z << " does not fit in " << sizeof buf << " characters");
  return std::string(buf, r.ptr);
}

StopFlag& process_stop_flag() {
  static StopFlag flag;
  return flag;
}

namespace {
extern "C" void ae_session_on_interrupt(int) {
  process_stop_flag().request();
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the process at once
}
}  // namespace

InterruptHandler::InterruptHandler() {
  process_stop_flag().clear();
  previous_int_ = std::signal(SIGINT, ae_session_on_interrupt);
  previous_term_ = std::signal(SIGTERM, ae_session_on_interrupt);
}

InterruptHandler::~InterruptHandler() {
  std::signal(SIGINT, previous_int_ == SIG_ERR ? SIG_DFL : previous_int_);
  std::signal(SIGTERM, previous_term_ == SIG_ERR ? SIG_DFL : previous_term_);
}

}  // namespace ae::session
