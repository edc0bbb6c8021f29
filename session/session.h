#pragma once
// What a front end sets up around the engine (DESIGN.md "Front ends"): device start-up, the
// arithmetic of the CUDA convolutions, the logging level, stop requests, and the few conventions
// every front end shares (the network side a model is run at, stars). The command line (apps/) and
// the Python module (python/) are two thin front ends over these calls and the library under them;
// neither holds engine logic.
//
// State: the device backend, the conv math and the log level are process-wide by nature (one CUDA
// context, one stderr); they are set only through these calls. Stop requests are explicit: a
// StopFlag (runtime/stop.h) owned by the front end and handed to the long calls in their options.
// The command line uses process_stop_flag(), set by InterruptHandler from SIGINT/SIGTERM.
#include <map>
#include <string>
#include <vector>

#include "model/checkpoint.h"
#include "runtime/device.h"
#include "runtime/log.h"
#include "runtime/stop.h"

namespace ae::session {

// ---- devices ----
// True when this build has a CUDA backend (nvcc was found when it was configured).
bool cuda_built();
// Brings the CUDA backend up on first use (cudart start-up costs time; work that never touches a
// device does not pay it). Returns why no CUDA device is usable, or "" when one is.
std::string cuda_unusable_reason();
// "auto" = a CUDA device when one is usable, else the CPU (saying why once, at info level);
// "cpu", "cuda", "cuda:N" (an error naming `flag` when no CUDA device is usable).
Device resolve_device(const std::string& text, const std::string& flag = "--device");

// ---- CUDA convolution arithmetic ----
// f32 (default), tf32 or bf16 (tensor cores, f32 accumulation); `where` names the flag in errors.
// Without a CUDA backend only f32 is accepted (convolutions run in f32 on the CPU).
void set_conv_math(const std::string& text, const std::string& where);
// The current setting's name ("f32" without a CUDA backend).
std::string conv_math();

// ---- activation storage ----
// "f32" (default) or "bf16": how models built from now on store the activations between layers
// (model::set_default_activation_dtype; ResNet18::set_activation_dtype says what changes).
void set_activations(const std::string& text, const std::string& where);
std::string activations();

// ---- logging ----
// "debug", "info", "warn", "error" or "quiet"; anything else is an error naming `where`.
LogLevel parse_log_level(const std::string& text, const std::string& where);
const char* log_level_name(LogLevel level);

// ---- conventions shared by the front ends ----
// The network side: "auto" = the side the model was trained at (its input_size metadata, else
// 224), "native" = 0 (each photo at its own size), or a side in 32..4096. `flag` names the option.
int parse_input_size(const std::string& text, const std::map<std::string, std::string>& metadata,
                     const std::string& flag = "--size");
// Stars on the 1-5 scale of FLICKR-AES: z through the model's normalisation, clamped (z beyond
// about +-1.8 would otherwise give stars above 5 or below 1).
double stars(double z, const model::TargetNorm& norm);
// A score as text that reads back as the same float (the shortest such decimal, fixed notation):
// what `aesthete score` prints, so that its CSV holds the model's output bit for bit.
std::string format_score(float z);

// The photos of a folder as `aesthete score` takes them: its .jpg/.jpeg/.png files (any case),
// sorted by name, not recursive. An error of kind file when `folder` is not a folder.
std::vector<std::string> photos_in_folder(const std::string& folder);

// ---- stop requests from signals (the command line) ----
// The process's flag, the one InterruptHandler sets.
StopFlag& process_stop_flag();

// While alive: process_stop_flag() is cleared, then SIGINT and SIGTERM request a stop on it (a
// second SIGINT ends the process at once, as a plain Ctrl-C would). The handlers that were
// installed before come back when it goes. One at a time per process.
class InterruptHandler {
 public:
  InterruptHandler();
  ~InterruptHandler();
  InterruptHandler(const InterruptHandler&) = delete;
  InterruptHandler& operator=(const InterruptHandler&) = delete;
  const StopFlag* flag() const { return &process_stop_flag(); }

 private:
  void (*previous_int_)(int);
  void (*previous_term_)(int);
};

}  // namespace ae::session
