// aesthete: personalised photo aesthetics. Entry point; every subcommand lives in its own file.
#include <cstdio>
#include <cstdlib>
#include <exception>

#include "apps/commands.h"
#include "runtime/dist.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "session/session.h"

namespace ae::app {

namespace {
int g_exit_code = 0;
std::vector<std::string> g_command_line;
}

const std::vector<std::string>& command_line() { return g_command_line; }

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_of(" '\"\\$`!*?;&|<>()") == std::string::npos) return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

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

// Device start-up, conv math and --size are library calls (session/session.h), shared with the
// Python module; these name the command line's flags.
void apply_conv_math(const std::string& text, const std::string& where) { session::set_conv_math(text, where); }

int parse_input_size(const std::string& s, const std::map<std::string, std::string>& metadata) {
  return session::parse_input_size(s, metadata, "--size");
}

Device resolve_device(const std::string& text) { return session::resolve_device(text, "--device"); }

}  // namespace ae::app

int main(int argc, char** argv) {
  ae::app::g_command_line.assign(argv, argv + argc);
  try {
    ae::dist::init(&argc, &argv);  // under mpirun: one of several ranks (runtime/dist.h)
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  CLI::App app{"aesthete: photo aesthetics with ResNet-18, from scratch in C++ and CUDA", "aesthete"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "aesthete 0.1");
  bool quiet = false, verbose = false;
  std::string conv_math, activations;
  app.add_flag("-q,--quiet", quiet, "Only print results and errors");
  app.add_flag("-v,--verbose", verbose, "Print debugging detail");
  app.add_option("--conv-math", conv_math,
                 "CUDA convolution arithmetic: f32 (default), tf32 or bf16 (tensor cores, f32 accumulation)");
  app.add_option("--activations", activations,
                 "Storage of the activations between layers: f32 (default) or bf16 (half the bytes; with "
                 "--conv-math bf16 on CUDA the convolutions read them as they are)");
  // Global options take effect before the chosen subcommand runs.
  app.parse_complete_callback([&] {
    if (quiet) ae::set_log_level(ae::LogLevel::warn);
    if (verbose) ae::set_log_level(ae::LogLevel::debug);
    if (!conv_math.empty()) ae::app::apply_conv_math(conv_math, "--conv-math");
    if (!activations.empty()) ae::session::set_activations(activations, "--activations");
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
  ae::app::add_demo_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    ae::dist::finalize();  // every rank parses the same command line, so every rank gets here
    // A word that is no command (`aesthete frobnicate`): CLI11 says only that a subcommand is
    // required; name the word and the commands instead, with the same exit status.
    const std::vector<std::string> rest = app.remaining();
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::RequiredError) && !rest.empty() &&
        app.get_subcommands().empty()) {
      std::string names;
      for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
        names += (names.empty() ? "" : ", ") + sub->get_name();
      std::fprintf(stderr, "error: unknown command '%s'; the commands are %s (aesthete --help)\n", rest.front().c_str(),
                   names.c_str());
      return e.get_exit_code();
    }
    return app.exit(e);
  } catch (const std::exception& e) {
    // One rank failing alone would leave the others waiting in a collective: end them all.
    if (ae::dist::size() > 1) ae::dist::abort_job(e.what());
    std::fprintf(stderr, "error: %s\n", e.what());
    ae::dist::finalize();
    return 1;
  }
  ae::dist::finalize();
  return ae::app::exit_code();
}
