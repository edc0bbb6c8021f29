#pragma once
// The `aesthete` command line: one file per subcommand, each adding itself to the app.
// apps/ parses flags and prints; the work happens in train/, model/ and weights_tools/.
#include <CLI/CLI.hpp>

#include <map>
#include <string>
#include <vector>

#include "runtime/device.h"

namespace ae::app {

void add_score_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_make_dataset_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_personalise_command(CLI::App& app);
void add_saliency_command(CLI::App& app);
void add_enhance_command(CLI::App& app);  // enhance and apply-recipe
void add_demo_command(CLI::App& app);

// Exit code the process returns once the chosen subcommand finished (0 unless it says so).
void set_exit_code(int code);
int exit_code();
// The process arguments (for "continue with" hints).
const std::vector<std::string>& command_line();
// `s` as one word for a POSIX shell (quoted only when it needs to be).
std::string shell_quote(const std::string& s);
// The process command line, shell-quoted (reports say how to reproduce a result).
std::string shell_command_line();
// The same with --resume added and the testing flag --stop-after-steps removed.
std::string resume_command_line();

// Arithmetic of the CUDA convolutions: f32 (default), tf32 or bf16 (tensor cores, f32 accumulate).
// `where` names the flag in errors. Without a CUDA backend only f32 is accepted.
void apply_conv_math(const std::string& text, const std::string& where);

// --size: "auto" = the side the model was trained at (its input_size metadata, else 224),
// "native" = 0 (each photo at its own size), or a side in 32..4096.
int parse_input_size(const std::string& text, const std::map<std::string, std::string>& metadata);

// "auto" = a CUDA device when one is usable, else the CPU (saying so once); "cpu", "cuda[:N]".
Device resolve_device(const std::string& text);

// --max-pixels N on a command that reads photos: the largest photo decoded (img::set_max_pixels;
// larger headers are refused before anything is allocated).
void add_max_pixels_option(CLI::App& command);

}  // namespace ae::app
