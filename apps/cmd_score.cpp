// aesthete score: predicted aesthetic score of photos, as CSV on stdout.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>

#include "apps/commands.h"
#include "model/shared_model.h"
#include "runtime/dist.h"
#include "runtime/log.h"
#include "session/session.h"
#include "train/preprocess.h"
#include "train/score.h"
#include "train/train_loop.h"
#include "weights_tools/model_file.h"

namespace ae::app {

namespace fs = std::filesystem;

namespace {

struct ScoreArgs {
  std::string model;
  std::vector<std::string> users;  // user files applied on top of `model`, one score column each
  std::string users_dir;           // every .safetensors user file in this folder
  bool generic = false;            // a column for the generic model beside the users
  std::string size = "auto";
  std::string device = "auto";
  int batch = train::kScoreBatch;
  bool cuda_graphs = true;
  std::vector<std::string> paths;
};

// Files as given; folders expand to their JPEG/PNG files (sorted, not recursive).
std::vector<std::string> expand_paths(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  for (const auto& a : args) {
    if (fs::is_directory(a)) {
      const std::vector<std::string> found = session::photos_in_folder(a);
      if (found.empty()) AE_WARN("no .jpg/.jpeg/.png files in folder '" << a << "'");
      out.insert(out.end(), found.begin(), found.end());
    } else {
      out.push_back(a);
    }
  }
  return out;
}

// One scoring column: the generic model or one person.
struct Column {
  std::string name;  // CSV column name
  std::string path;  // user file ("" = the generic model)
  std::shared_ptr<model::UserState> resident;  // loaded state, when kept in memory
};

std::string column_name(const model::UserState& s, const std::string& path, std::set<std::string>& taken) {
  std::string base = s.user_id.empty() ? fs::path(path).stem().string() : s.user_id;
  for (char& c : base)
    if (c == ',' || c == '"' || c == '\n' || c == '\r') c = '_';
  std::string name = base;
  for (int i = 2; !taken.insert(name).second; ++i) name = base + "_" + std::to_string(i);
  return name;
}

// Rank 0 receives every rank's columns (rank r scored columns r, r + size, ...): `photos` floats
// per column, in column order within each rank's bytes.
void gather_columns(std::vector<std::vector<float>>& z, std::size_t photos) {
  std::string mine;
  for (std::size_t c = static_cast<std::size_t>(dist::rank()); c < z.size(); c += static_cast<std::size_t>(dist::size()))
    mine.append(reinterpret_cast<const char*>(z[c].data()), z[c].size() * sizeof(float));
  const std::vector<std::string> all = dist::gather_to_root(mine, "score: collecting the ranks' scores");
  for (std::size_t r = 0; r < all.size(); ++r) {
    std::size_t at = 0;
    for (std::size_t c = r; c < z.size(); c += all.size()) {
      AE_CHECK(all[r].size() >= (at + photos) * sizeof(float),
               "score: rank " << r << " sent " << all[r].size() << " bytes of scores, too few for its columns");
      z[c].resize(photos);
      std::memcpy(z[c].data(), all[r].data() + at * sizeof(float), photos * sizeof(float));
      at += photos;
    }
  }
}

void run_score(const ScoreArgs& a) {
  const Device device = resolve_device(a.device);
  const model::Checkpoint ck = weights::load_model_file(a.model);
  const int size = parse_input_size(a.size, ck.metadata);
  AE_CHECK(ck.config.head != model::HeadType::imagenet,
           "'" << a.model << "' is an ImageNet classifier (fc 512->1000, no aesthetics head); train one with "
                  "`aesthete train --init " << a.model << " ...`");
  std::vector<std::string> user_paths = a.users;
  if (!a.users_dir.empty()) {
    AE_CHECK(fs::is_directory(a.users_dir), "--users-dir '" << a.users_dir << "' is not a folder");
    std::vector<std::string> found;
    for (const auto& e : fs::directory_iterator(a.users_dir))
      if (e.is_regular_file() && e.path().extension() == ".safetensors") found.push_back(e.path().string());
    std::sort(found.begin(), found.end());
    AE_CHECK(!found.empty(), "--users-dir '" << a.users_dir << "' holds no .safetensors user files");
    user_paths.insert(user_paths.end(), found.begin(), found.end());
  }
  // The generic model once, its digest once; each person is a state bound onto it.
  model::SharedModel shared(ck, device, "--model '" + a.model + "'");
  model::ResNet18& net = shared.net();
  net.set_training(false);
  net.set_grad_enabled(false);

  // Every user file is read and checked before any photo is scored; a few are kept resident, many
  // are streamed from disk (one person's state in memory at a time).
  constexpr std::size_t kResidentUsers = 16;
  const bool resident = user_paths.size() <= kResidentUsers;
  std::vector<Column> columns;
  std::set<std::string> taken;
  if (user_paths.empty() || a.generic) {
    taken.insert("generic");
    columns.push_back(Column{"generic", "", nullptr});
  }
  // Under mpirun the columns are dealt to the ranks in turn (every rank checks every file and
  // decodes every photo; rank 0 gathers the scores and alone prints).
  const auto mine = [](std::size_t column) { return static_cast<int>(column % dist::size()) == dist::rank(); };
  for (const std::string& p : user_paths) {
    std::shared_ptr<model::UserState> s = shared.load_user(p);
    const bool keep = resident && mine(columns.size());
    columns.push_back(Column{column_name(*s, p, taken), p, keep ? s : nullptr});
  }
  if (dist::size() > 1) dist::announce(device.str());
  if (user_paths.size() == 1 && !a.generic) {
    AE_INFO("scoring for user " << columns[0].name << " ('" << columns[0].path << "')");
  } else if (!user_paths.empty()) {
    AE_INFO("scoring for " << user_paths.size() << " users" << (a.generic ? " and the generic model" : "") << " ("
                           << (resident ? "their states kept in memory" : "one user's state in memory at a time")
                           << ")");
  }

  const std::vector<std::string> files = expand_paths(a.paths);
  AE_CHECK(!files.empty(), "no images to score");
  const bool single = columns.size() == 1;
  if (dist::is_root()) {
    std::printf("path");
    for (const Column& c : columns) {
      if (single)
        std::printf(",score,stars");
      else
        std::printf(",%s,%s_stars", c.name.c_str(), c.name.c_str());
    }
    std::printf("\n");
  }
  int failures = 0;
  // Photos are decoded once and scored for every person, the next chunk decoded while this one is
  // scored. Resident states are cheap to bind, so a chunk is one batch and the overlap starts at
  // once; states streamed from disk are read once per chunk, so their chunks are large.
  const std::size_t chunk_bytes = resident ? 0 : std::size_t{128} << 20;
  train::PhotoChunkReader reader(files, size, a.batch, chunk_bytes);
  // One column: on a CUDA device the batches of one size replay one captured forward, with the
  // eager bits (train::Predictor). Several columns bind another state per column and chunk, which
  // a graph would have to capture again each time: those run eagerly.
  train::Predictor predictor(shared.net(), shared.device(), a.cuda_graphs && columns.size() == 1);
  while (!reader.done()) {
    const train::PhotoChunk chunk = reader.next();
    if (dist::is_root())
      for (const std::string& why : chunk.failures) std::fprintf(stderr, "error: %s\n", why.c_str());
    failures += static_cast<int>(chunk.failures.size());
    const std::vector<train::PhotoBatch>& batches = chunk.batches;
    std::size_t photos = 0;
    for (const train::PhotoBatch& b : batches) photos += b.names.size();
    std::vector<std::vector<float>> z(columns.size());  // column -> the chunk's photos in order
    for (std::size_t c = 0; c < columns.size(); ++c) {
      if (!mine(c)) continue;
      if (columns[c].path.empty())
        shared.bind_generic();
      else
        shared.bind(columns[c].resident ? columns[c].resident : shared.load_user(columns[c].path));
      for (const train::PhotoBatch& b : batches) {
        const std::vector<float> part = predictor.scores(b.x);
        z[c].insert(z[c].end(), part.begin(), part.end());
      }
    }
    if (dist::size() > 1) gather_columns(z, photos);
    if (!dist::is_root()) continue;
    std::size_t row = 0;
    for (const train::PhotoBatch& b : batches) {
      for (const std::string& name : b.names) {
        std::printf("%s", name.c_str());
        for (std::size_t c = 0; c < columns.size(); ++c) {
          const float v = z[c][row];  // printed so that it reads back as the same float
          std::printf(",%s,%.4f", session::format_score(v).c_str(), session::stars(v, shared.norm()));
        }
        std::printf("\n");
        ++row;
      }
    }
    std::fflush(stdout);
  }
  if (failures > 0) {
    if (dist::is_root()) AE_WARN(failures << " of " << files.size() << " images could not be read (listed above)");
    set_exit_code(1);
  }
}

}  // namespace

void add_score_command(CLI::App& app) {
  auto args = std::make_shared<ScoreArgs>();
  CLI::App* cmd = app.add_subcommand("score", "Score photos: CSV path,score,stars on stdout");
  cmd->add_option("--model", args->model, "Model file (.safetensors from aesthete, or a PyTorch .pth state dict)")
      ->required();
  cmd->add_option("--user", args->users,
                  "User file (from personalise --fit-all) applied on top of --model, which must be the generic model "
                  "it was trained on; repeat for several people (one score column each)")
      ->expected(1)
      ->allow_extra_args(false)  // `--user F photo.jpg`: the photo is a path, not a second user
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--users-dir", args->users_dir, "Score for every user file (.safetensors) in this folder");
  cmd->add_flag("--generic", args->generic, "With --user/--users-dir: also a column for the generic model");
  cmd->add_option("--size", args->size, "Input side (squash-resize); auto = the size the model was trained at (224 if unknown); "
                 "native = each photo at its own size")
      ->capture_default_str();
  cmd->add_option("--device", args->device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--batch", args->batch, "Photos per forward pass")->capture_default_str();
  cmd->add_flag("--cuda-graphs,!--no-cuda-graphs", args->cuda_graphs,
                "On a CUDA device with one score column, replay one captured forward per batch size (default; "
                "same scores)");
  add_max_pixels_option(*cmd);
  cmd->add_option("paths", args->paths, "Images (JPEG, PNG) or folders of images")->required();
  cmd->callback([args] { run_score(*args); });
}

}  // namespace ae::app
