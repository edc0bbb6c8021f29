#pragma once
// The demo's page (DIR/index.html) and terminal summary, built from the files the demo's steps
// wrote: one layout (where each step writes) shared by the steps and the page, so the page can
// only show what a step produced, and says so when a file is missing.
#include <string>
#include <vector>

namespace ae::app {

// Where every step of the demo writes, relative to the demo folder.
struct DemoLayout {
  std::string data = "data", generic = "generic", personalise = "personalise", enhance = "enhance",
              saliency = "saliency";
  std::vector<std::string> people;    // warm, vivid, moody
  std::vector<std::string> held_out;  // held-out photo stems (chelsea, china)
  std::vector<std::string> modes = {"adapters", "head", "full"};  // adapters first: its users/ are used

  std::string images() const { return data + "/images"; }
  std::string train_csv() const { return data + "/train_means_normalized.csv"; }
  std::string workers_csv() const { return data + "/test_workers_dataset_normalized.csv"; }
  std::string held_out_photo(const std::string& stem) const { return data + "/held-out/" + stem + ".jpg"; }
  std::string model() const { return generic + "/model.safetensors"; }
  std::string mode_dir(const std::string& mode) const { return personalise + "/" + mode; }
  std::string user_file(const std::string& person) const { return mode_dir(modes.front()) + "/users/" + person + ".safetensors"; }
  // who: "generic" or a person.
  std::string enhanced(const std::string& stem, const std::string& who) const {
    return enhance + "/" + stem + "/" + who + ".jpg";
  }
  std::string saliency_map(const std::string& stem, const std::string& who) const {
    return saliency + "/" + stem + "/" + (who == "generic" ? who : who + "-minus-generic") + ".png";
  }
};

struct DemoSettings {
  bool quick = false;
  std::string device;
  int side = 0, size = 0, variants = 0, people_variants = 0, ratings = 0, k = 0;
  int train_epochs = 0, adapters_epochs = 0, head_epochs = 0, full_epochs = 0, enhance_steps = 0, smoothgrad = 0;
};

struct DemoStep {
  std::string title, command;
  double seconds = 0;  // measured wall-clock time of the step
};

// Writes `dir`/index.html (atomically) from the outputs under `dir`, and returns the terminal
// summary (ends with the page's path). Throws ae::Error naming a missing or malformed output.
std::string write_demo_page(const std::string& dir, const DemoLayout& layout, const DemoSettings& settings,
                            const std::vector<DemoStep>& steps);

}  // namespace ae::app
