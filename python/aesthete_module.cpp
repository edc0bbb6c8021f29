// The `aesthete` Python module (DESIGN.md "Front ends"): a thin pybind11 front end over the same
// library calls as the command line (session/, train/, model/, weights_tools/). API in
// docs/python.md; tests in python/tests/.
//
// How a call runs (run_engine): the engine works on a worker thread without the GIL, while the
// calling thread waits for it, taking the GIL every 50 ms to let Python run its signal handlers
// (PyErr_CheckSignals). When a handler raises (Ctrl-C: KeyboardInterrupt), the call's StopFlag is
// set; the engine ends at its next safe point (training and personalisation after the current
// step, enhancement and saliency between steps, scoring between batches) and the Python exception
// is raised once it has. Other Python threads run meanwhile.
//
// One Model object is one SharedModel (one generic backbone; people are states bound onto it), so
// its calls run one at a time: each call holds the model's mutex while it works, and calls from
// other threads on the same Model wait (scores stay correct; for parallel scoring load one Model
// per thread). Users belong to the Model that loaded or trained them.
//
// Errors: ae::Error becomes aesthete.ArgumentError (also a ValueError) for ErrorKind::invalid,
// aesthete.FileError (also an OSError) for ErrorKind::file, KeyboardInterrupt for interrupted; both
// derive from aesthete.Error. The message is the engine's.
//
// Arrays: photos in are H x W x 3 (or N x H x W x 3) uint8, alone or in a list with paths (photos_of,
// the one conversion of photo arguments). score reads C-contiguous arrays in place (numpy converts
// other layouts to a C-ordered copy first); enhance, saliency and apply_recipe copy the one photo
// they work on into the engine's image; personalise writes array photos as PNG files (lossless)
// to a temporary folder, because training reads its photos through the file loader. Every copy
// is counted (aesthete._input_copies()). Arrays out are new numpy arrays that own their memory.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "model/shared_model.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/stop.h"
#include "session/session.h"
#include "train/enhance.h"
#include "train/personalise.h"
#include "train/preprocess.h"
#include "train/report_html.h"
#include "train/saliency.h"
#include "train/score.h"
#include "train/train_loop.h"
#include "train/trainer.h"
#include "weights_tools/model_file.h"

namespace py = pybind11;
namespace fs = std::filesystem;

namespace ae::python {
namespace {

// ---------------------------------------------------------------- errors

PyObject* g_error = nullptr;           // aesthete.Error
PyObject* g_argument_error = nullptr;  // aesthete.ArgumentError(Error, ValueError)
PyObject* g_file_error = nullptr;      // aesthete.FileError(Error, OSError)

void translate(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const Error& e) {
    switch (e.kind()) {
      case ErrorKind::interrupted: PyErr_SetString(PyExc_KeyboardInterrupt, e.what()); return;
      case ErrorKind::file: PyErr_SetString(g_file_error, e.what()); return;
      case ErrorKind::invalid: PyErr_SetString(g_argument_error, e.what()); return;
    }
    PyErr_SetString(g_error, e.what());
  } catch (const fs::filesystem_error& e) {
    PyErr_SetString(g_file_error, e.what());
  }
}

[[noreturn]] void argument_error(const std::string& message) { throw Error(message, ErrorKind::invalid); }

// ---------------------------------------------------------------- running the engine

// Runs `work(stop)` on a worker thread without the GIL (see the file comment), with a StopFlag
// that a Ctrl-C meanwhile sets. The calling thread must hold the GIL. Returns what `work` returns,
// rethrows what it throws, or raises the Python exception a signal handler raised meanwhile (after
// `work` has ended).
template <class F>
auto run_engine(F&& work) -> decltype(work(std::declval<StopFlag&>())) {
  using R = decltype(work(std::declval<StopFlag&>()));
  StopFlag stop;
  std::packaged_task<R()> task([&] { return work(stop); });
  std::future<R> result = task.get_future();
  bool raised = false;
  std::thread worker(std::move(task));
  for (;;) {
    bool done = false;
    {
      py::gil_scoped_release nogil;
      done = result.wait_for(std::chrono::milliseconds(50)) == std::future_status::ready;
    }
    if (done) break;
    if (!raised && PyErr_CheckSignals() != 0) {
      raised = true;  // the exception stays set until we raise it below
      stop.request();
    }
  }
  {
    py::gil_scoped_release nogil;
    worker.join();
  }
  if (raised) throw py::error_already_set();
  return result.get();
}

// ---------------------------------------------------------------- photos

std::string path_of(const py::handle& h) { return py::str(py::module_::import("os").attr("fspath")(h)); }

bool is_path(const py::handle& h) {
  return py::isinstance<py::str>(h) || py::hasattr(h, "__fspath__");
}

std::string type_name(const py::handle& h) { return py::str(py::type::of(h).attr("__name__")); }

// Copies of photo arrays this module made (aesthete._input_copies(), for the tests and for people
// who want to know): a layout numpy had to convert to C order before the engine could read it
// (measured: the pixels the engine reads are not the caller's), and the copy made by a call that
// edits or trains on one (enhance, saliency, apply_recipe: into the engine's image; personalise:
// each array photo written to a temporary PNG file).
std::atomic<long long> g_input_copies{0};

// Photos given as paths and/or arrays, in order: a path (`path`, decoded when the engine reads it)
// or the pixels of an array (`view`, read in place).
struct Photo {
  std::string path;     // empty for an array photo
  img::ImageView view;  // valid when path is empty
};

struct Photos {
  std::vector<Photo> items;
  std::vector<py::object> arrays;  // keeps the arrays the views point into alive
  bool single = false;             // one path or one H x W x 3 array (not a list or a batch)
};

// An H x W x 3 or N x H x W x 3 uint8 array, C-contiguous: the caller's own when it already is
// (no copy), else numpy's C-ordered copy (counted).
py::array_t<uint8_t, py::array::c_style> photo_array(const py::handle& h, const char* what) {
  if (!py::isinstance<py::array>(h))
    argument_error(std::string(what) + ": expected a path, a uint8 photo array or a list of them, got " + type_name(h));
  const py::array a = py::reinterpret_borrow<py::array>(h);
  if (!a.dtype().is(py::dtype::of<uint8_t>()))
    argument_error(std::string(what) + ": a photo array must be uint8 (0..255), got dtype " +
                   std::string(py::str(a.dtype())) + " (convert with (x * 255).round().clip(0, 255).astype('uint8'))");
  if (!((a.ndim() == 3 || a.ndim() == 4) && a.shape(a.ndim() - 1) == 3))
    argument_error(std::string(what) + ": a photo array must be H x W x 3 or N x H x W x 3 (RGB, channels last), got "
                   "shape " + std::string(py::str(a.attr("shape"))));
  auto c = py::array_t<uint8_t, py::array::c_style>::ensure(a);
  if (c.data() != a.data()) ++g_input_copies;
  return c;
}

img::ImageView view_at(const py::array_t<uint8_t, py::array::c_style>& a, py::ssize_t i) {
  const bool batch = a.ndim() == 4;
  const auto h = a.shape(batch ? 1 : 0), w = a.shape(batch ? 2 : 1);
  if (h < 1 || w < 1) argument_error("photo array of " + std::to_string(h) + " x " + std::to_string(w) + " pixels is empty");
  if (h > (1 << 20) || w > (1 << 20) || h * w > img::max_pixels())
    argument_error("photo array of " + std::to_string(w) + " x " + std::to_string(h) + " pixels: more than the limit of " +
                   std::to_string(img::max_pixels()) + " pixels");
  return img::ImageView{static_cast<int>(w), static_cast<int>(h), a.data() + i * h * w * 3};
}

// x: a path, an H x W x 3 array, an N x H x W x 3 array, or a list/tuple of paths and H x W x 3
// arrays (each in place when C-contiguous uint8).
Photos photos_of(const py::handle& x, const char* what) {
  Photos out;
  auto add_array = [&](const py::handle& h, bool in_list) {
    auto a = photo_array(h, what);
    if (in_list && a.ndim() != 3)
      argument_error(std::string(what) + ": a list holds paths or H x W x 3 arrays, got an array of shape " +
                     std::string(py::str(a.attr("shape"))));
    const bool batch = a.ndim() == 4;
    for (py::ssize_t i = 0, n = batch ? a.shape(0) : 1; i < n; ++i) out.items.push_back({"", view_at(a, i)});
    out.arrays.push_back(std::move(a));
    return batch;
  };
  if (is_path(x)) {
    out.single = true;
    out.items.push_back({path_of(x), {}});
  } else if (py::isinstance<py::list>(x) || py::isinstance<py::tuple>(x)) {
    for (const py::handle& h : x) {
      if (is_path(h))
        out.items.push_back({path_of(h), {}});
      else if (py::isinstance<py::array>(h))
        add_array(h, true);
      else
        argument_error(std::string(what) + ": a list must hold paths or H x W x 3 uint8 arrays, got " + type_name(h));
    }
  } else {
    out.single = !add_array(x, false);
  }
  return out;
}

img::Image image_of(const img::ImageView& v) {
  img::Image im;
  im.width = v.width;
  im.height = v.height;
  im.rgb.assign(v.rgb, v.rgb + std::size_t(v.width) * v.height * 3);
  return im;
}

// One photo as the engine's image, for calls that edit or explain it: a path (read now) or an
// H x W x 3 array (copied, counted).
img::Image one_photo(const py::handle& x, const char* what) {
  const Photos p = photos_of(x, what);
  if (!p.single) argument_error(std::string(what) + ": expected one photo (a path or H x W x 3), got " +
                                std::to_string(p.items.size()));
  if (!p.items[0].path.empty()) {
    const std::string path = p.items[0].path;
    py::gil_scoped_release nogil;
    return img::read_image(path);
  }
  ++g_input_copies;
  return image_of(p.items[0].view);
}

py::array_t<uint8_t> to_numpy(const img::Image& im) {
  py::array_t<uint8_t> out({py::ssize_t(im.height), py::ssize_t(im.width), py::ssize_t(3)});
  std::memcpy(out.mutable_data(), im.rgb.data(), im.rgb.size());
  return out;
}

// A new float32 numpy array of `shape` holding `v`.
py::array_t<float> to_numpy(const std::vector<float>& v, std::vector<py::ssize_t> shape) {
  py::array_t<float> out(std::move(shape));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

py::object json_loads(const std::string& text) { return py::module_::import("json").attr("loads")(text); }

// ---------------------------------------------------------------- models and users

struct Core {
  std::unique_ptr<model::SharedModel> shared;
  std::mutex mutex;  // one call at a time (the binding is the model's state)
  std::string path;
  int size = 224;
};

struct User {
  std::shared_ptr<Core> core;
  std::shared_ptr<model::UserState> state;
  std::string id, path;
  py::dict metrics;
};

struct Model {
  std::shared_ptr<Core> core;

  // Runs `work(shared, stop)` on the engine (run_engine) with the model's mutex held and `state`
  // bound (nullptr: the generic model).
  template <class F>
  auto run(const std::shared_ptr<model::UserState>& state, F&& work) const {
    return run_engine([&](StopFlag& stop) {
      std::lock_guard<std::mutex> lock(core->mutex);
      if (state)
        core->shared->bind(state);
      else
        core->shared->bind_generic();
      return work(*core->shared, stop);
    });
  }

  std::shared_ptr<model::UserState> state_of(const std::optional<User>& user) const {
    if (!user) return nullptr;
    if (user->core != core)
      argument_error("user '" + user->id + "' belongs to another Model object (" + user->core->path +
                     "); load it on this one with load_user");
    return user->state;
  }
};

std::shared_ptr<Core> load_core(const std::string& path, const std::string& device_text, const std::string& size_text) {
  auto core = std::make_shared<Core>();
  core->path = path;
  const Device device = session::resolve_device(device_text, "device=");
  const model::Checkpoint ck = weights::load_model_file(path);
  if (ck.config.head == model::HeadType::imagenet)
    throw Error("'" + path + "' is an ImageNet classifier (fc 512->1000, no aesthetics head); train one with "
                "aesthete.train(init='" + path + "', ...)", ErrorKind::file);
  core->size = session::parse_input_size(size_text, ck.metadata, "size=");
  core->shared = std::make_unique<model::SharedModel>(ck, device, "'" + path + "'");
  return core;
}

// ---------------------------------------------------------------- score

// The z of every photo: paths decoded and arrays read in place, in batches of `batch` consecutive
// photos (as `aesthete score` batches them), one at a time at native size.
py::object score(const Model& m, const py::object& x, const std::optional<User>& user, int batch) {
  if (batch < 1) argument_error("batch must be at least 1, got " + std::to_string(batch));
  const auto state = m.state_of(user);
  const Photos photos = photos_of(x, "score");
  if (photos.single && !photos.items[0].path.empty() && fs::is_directory(photos.items[0].path))
    argument_error("'" + photos.items[0].path + "' is a folder: score aesthete.photos('" + photos.items[0].path +
                   "') for its photos");
  const int size = m.core->size;
  const std::size_t per_batch = size > 0 ? static_cast<std::size_t>(batch) : 1;
  const std::vector<float> z = m.run(state, [&](model::SharedModel& shared, StopFlag& stop) {
    // On a CUDA device the batches of one size replay one captured forward from the second on
    // (train::Predictor, as `aesthete score` scores one column), with the eager scores' bits.
    train::Predictor predictor(shared.net(), shared.device());
    std::vector<float> out;
    for (std::size_t next = 0; next < photos.items.size();) {
      throw_if_stopped(&stop, "score");
      std::vector<Tensor> inputs;
      for (; next < photos.items.size() && inputs.size() < per_batch; ++next) {
        const Photo& p = photos.items[next];
        inputs.push_back(p.path.empty() ? img::preprocess_eval(p.view, size)
                                        : img::preprocess_eval(img::read_image(p.path), size));
      }
      const std::vector<float> part = predictor.scores(train::stack_inputs(inputs));
      out.insert(out.end(), part.begin(), part.end());
    }
    return out;
  });
  if (photos.single) return py::float_(z.at(0));
  return to_numpy(z, {py::ssize_t(z.size())});
}

// Stars of z (a number or an array) under `norm`.
py::object stars_of(const py::object& z, const model::TargetNorm& norm) {
  if (py::isinstance<py::float_>(z) || py::isinstance<py::int_>(z)) return py::float_(session::stars(z.cast<double>(), norm));
  const auto a = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(z);
  if (!a) argument_error("stars: expected a number or an array of z scores");
  if (a.ndim() == 0) return py::float_(session::stars(a.data()[0], norm));
  py::array_t<double> out(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
  for (py::ssize_t i = 0; i < a.size(); ++i) out.mutable_data()[i] = session::stars(a.data()[i], norm);
  return out;
}

// ---------------------------------------------------------------- personalise

train::PersonaliseMode mode_of(const std::string& s) {
  if (s != "adapters" && s != "head" && s != "full") argument_error("mode must be adapters, head or full, got '" + s + "'");
  return train::parse_mode(s);
}

py::dict row_dict(const train::RunRow& r) {
  py::dict d;
  d["n_train"] = r.n_train;
  d["n_val"] = r.n_val;
  d["n_test"] = r.n_test;
  d["rho_generic"] = r.rho_generic;
  d["rho_personal"] = r.rho_personal;
  d["mse_generic"] = r.mse_generic;
  d["mse_personal"] = r.mse_personal;
  d["epochs"] = r.epochs;
  d["train_loss"] = r.train_loss;
  d["test_rho"] = r.test_rho;
  d["test_mse"] = r.test_mse;
  d["val_mse"] = r.val_mse;
  d["unreadable_test_images"] = r.unreadable;
  d["seconds"] = r.seconds;
  return d;
}

// A folder of its own under the system's temporary folder, removed with everything in it when
// this object ends.
struct TempFolder {
  fs::path path;
  TempFolder() {
    std::string name = (fs::temp_directory_path() / "aesthete-personalise-XXXXXX").string();
    if (mkdtemp(name.data()) == nullptr)
      throw Error("personalise: cannot make a temporary folder in " + fs::temp_directory_path().string(), ErrorKind::file);
    path = name;
  }
  ~TempFolder() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  TempFolder(const TempFolder&) = delete;
  TempFolder& operator=(const TempFolder&) = delete;
};

User personalise(const Model& m, const py::object& images, const py::object& ratings, std::optional<int> k,
                 const std::string& mode, std::optional<int> epochs, std::optional<float> lr, std::optional<int> decay_every,
                 std::optional<float> weight_decay, int batch, const std::string& select, double val_fraction,
                 const std::string& rating_scale, uint64_t seed, const std::string& user_id, int workers) {
  const Photos photos = photos_of(images, "personalise");
  if (photos.single)
    argument_error("personalise: images must be a list of photos (paths or H x W x 3 uint8 arrays) or an N x H x W x 3 "
                   "array, got one photo");
  const std::size_t n = photos.items.size();
  const auto r = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(ratings);
  if (!r || r.ndim() != 1) argument_error("personalise: ratings must be a 1-d sequence of numbers");
  if (static_cast<std::size_t>(r.size()) != n)
    argument_error("personalise: " + std::to_string(n) + " images but " + std::to_string(r.size()) + " ratings");
  if (rating_scale != "z" && rating_scale != "stars")
    argument_error("rating_scale must be 'z' (the model's units, as the CSV files) or 'stars' (1-5), got '" + rating_scale + "'");
  if (user_id.empty() || user_id.find_first_of("/\\,\n") != std::string::npos)
    argument_error("user_id '" + user_id + "' must be non-empty without '/', '\\', ',' or newlines");
  if (m.core->size <= 0) argument_error("personalise: the model was loaded with size='native'; personalisation needs one side");
  train::PersonaliseOptions o;
  o.k = k.value_or(0);
  if (k && *k < 2) argument_error("k must be at least 2 (or None: train on every rating), got " + std::to_string(*k));
  o.mode = mode_of(mode);
  o.epochs = epochs.value_or(0);
  if (epochs && *epochs < 1) argument_error("epochs must be at least 1, got " + std::to_string(*epochs));
  o.lr = lr.value_or(0);
  o.decay_every = decay_every.value_or(0);
  o.weight_decay = weight_decay.value_or(-1);
  o.batch = batch;
  if (select != "fixed" && select != "val") argument_error("select must be fixed or val, got '" + select + "'");
  o.select = train::parse_select(select);
  o.val_fraction = val_fraction;
  o.size = m.core->size;
  o.device = m.core->shared->device();
  o.workers = workers;
  o.seed = seed;

  const model::TargetNorm norm = m.core->shared->norm();
  std::vector<data::Sample> samples(n);
  for (std::size_t i = 0; i < n; ++i) {
    const double v = r.data()[i];
    samples[i] = {photos.items[i].path, static_cast<float>(rating_scale == "z" ? v : (v - norm.mean) / norm.std)};
  }
  // Training reads photos from files (train/loader.h, as `aesthete personalise`): an array photo
  // is written as a PNG (lossless, so the engine decodes exactly its pixels) to a temporary folder.
  std::optional<TempFolder> folder;
  for (std::size_t i = 0; i < n; ++i) {
    if (!samples[i].path.empty()) continue;
    if (!folder) folder.emplace();
    samples[i].path = (folder->path / ("photo-" + std::to_string(i) + ".png")).string();
    ++g_input_copies;
  }
  const train::FitResult fit = m.run(nullptr, [&](model::SharedModel& shared, StopFlag& stop) {
    for (std::size_t i = 0; i < n; ++i)
      if (photos.items[i].path.empty()) img::write_png(samples[i].path, image_of(photos.items[i].view));
    o.stop = &stop;
    return train::fit_user(shared, user_id, samples, o);
  });
  if (fit.interrupted) throw Error("personalise: stopped on request", ErrorKind::interrupted);  // not reached: run_engine raised
  User u;
  u.core = m.core;
  u.state = fit.state;
  u.id = user_id;
  u.metrics = row_dict(fit.row);
  return u;
}

// ---------------------------------------------------------------- enhance and saliency

py::tuple enhance(const Model& m, const py::object& x, const std::optional<User>& user, const std::string& mode,
                  std::optional<double> epsilon, int steps, int max_side, int eot, uint64_t seed) {
  const auto state = m.state_of(user);
  if (mode != "global" && mode != "pixels") argument_error("mode must be global or pixels, got '" + mode + "'");
  if (m.core->size <= 0) argument_error("enhance: the model was loaded with size='native'; enhancement needs one side");
  const img::Image photo = one_photo(x, "enhance");
  train::EnhanceOptions o;
  o.mode = train::parse_enhance_mode(mode);
  o.epsilon = epsilon.value_or(-1);
  if (epsilon && !(*epsilon >= 0)) argument_error("epsilon must be >= 0");
  o.steps = steps;
  o.max_side = max_side;
  o.eot = eot;
  o.seed = seed;
  o.size = m.core->size;
  struct Out {
    train::EnhanceResult r;
    double before = 0, after = 0;
  };
  Out out = m.run(state, [&](model::SharedModel& shared, StopFlag& stop) {
    o.stop = &stop;
    Out o2;
    o2.before = train::score_photo(shared, photo, o.size);
    o2.r = train::enhance(shared, photo, o);
    o2.after = train::score_photo(shared, o2.r.image, o.size);
    return o2;
  });
  py::dict recipe;
  const std::vector<std::pair<std::string, double>> extra = {
      {"score_before", out.before}, {"score_after", out.after}, {"accepted_steps", out.r.accepted}};
  if (o.mode == train::EnhanceMode::global) {
    recipe = json_loads(out.r.recipe.to_json(extra));
  } else {
    recipe["format"] = "aesthete-pixel-edit";
    recipe["epsilon"] = o.epsilon < 0 ? 8.0 / 255 : o.epsilon;
    recipe["max_change"] = out.r.max_change;
    for (const auto& [key, v] : extra) recipe[py::str(key)] = v;
  }
  recipe["mode"] = mode;
  return py::make_tuple(to_numpy(out.r.image), recipe);
}

py::array_t<uint8_t> apply_recipe(const py::object& x, const py::dict& recipe) {
  const std::string text = py::str(py::module_::import("json").attr("dumps")(recipe));
  const train::EditRecipe r = train::EditRecipe::from_json(text, "recipe");
  const img::Image photo = one_photo(x, "apply_recipe");
  return to_numpy(run_engine([&](StopFlag&) { return train::apply_recipe(photo, r); }));
}

py::array_t<float> saliency(const Model& m, const py::object& x, const std::optional<User>& user, int smoothgrad,
                            double noise, uint64_t seed, bool versus_generic, bool full_size) {
  const auto state = m.state_of(user);
  if (versus_generic && !state) argument_error("versus_generic compares a person's map with the generic model's: give user=");
  if (m.core->size <= 0) argument_error("saliency: the model was loaded with size='native'; the map needs one side");
  const img::Image photo = one_photo(x, "saliency");
  train::SaliencyOptions o;
  o.size = m.core->size;
  o.smoothgrad = smoothgrad;
  o.noise = noise;
  o.seed = seed;
  o.versus_generic = versus_generic;
  const std::vector<float> map = m.run(state, [&](model::SharedModel& shared, StopFlag& stop) {
    o.stop = &stop;
    const train::SaliencyResult r = train::compute_saliency(shared, photo, o);
    return full_size ? train::upsample_map(r.map, r.size, r.size, photo.height, photo.width) : r.map;
  });
  const py::ssize_t h = full_size ? photo.height : o.size, w = full_size ? photo.width : o.size;
  return to_numpy(map, {h, w});
}

// ---------------------------------------------------------------- train

py::dict train_model(const fs::path& train_csv, const fs::path& images, const fs::path& out_dir,
                     const std::optional<fs::path>& val_csv, double val_fraction,
                     const std::optional<fs::path>& init_path, const std::string& head,
                     int epochs, int64_t batch, float lr, float lr_decay, int decay_every, const std::string& optimizer,
                     float weight_decay, float dropout, int size, int resize_to, const std::string& resize_mode,
                     const std::string& device, int workers, uint64_t seed, bool resume, double max_missing) {
  const std::string out = out_dir.string(), init = init_path ? init_path->string() : "";
  train::TrainOptions o;
  o.train_csv = train_csv.string();
  o.images_dir = images.string();
  o.out_dir = out;
  o.val_csv = val_csv ? val_csv->string() : "";
  o.val_fraction = val_fraction;
  o.head = model::parse_head(head);
  if (o.head == model::HeadType::imagenet) argument_error("head must be seed or linear");
  o.epochs = epochs;
  o.batch = batch;
  o.lr = lr;
  o.lr_decay = lr_decay;
  o.decay_every = decay_every;
  o.optimizer = train::parse_optimizer(optimizer);
  o.weight_decay = weight_decay;
  o.dropout = dropout;
  o.size = size;
  o.resize_to = resize_to;
  o.resize_mode = data::parse_resize_mode(resize_mode);
  o.device = session::resolve_device(device, "device=");
  o.workers = workers;
  o.seed = seed;
  o.resume = resume;
  o.max_missing_fraction = max_missing;
  // report.html as `aesthete train` keeps it: after every epoch, and once more when stopped.
  const auto settings = train::training_settings(o, init, head, optimizer, resize_mode);
  const train::TrainResult r = run_engine([&](StopFlag& stop) {
    o.stop = &stop;
    std::optional<model::Checkpoint> start;
    if (!init.empty() && !o.resume) start = weights::load_model_file(init);
    auto write_report = [&](const train::TrainResult& res) { train::write_training_report(res, settings, o.out_dir); };
    train::TrainResult res = train::run_training(o, start, write_report);
    if (res.interrupted) write_report(res);
    return res;
  });
  py::list rows;
  for (const train::EpochRow& e : r.epochs) {
    py::dict d;
    d["epoch"] = e.epoch;
    d["lr"] = e.lr;
    d["train_loss"] = e.train_loss;
    d["val_mse"] = e.val_mse;
    d["val_spearman"] = e.val_spearman;
    d["val_pearson"] = e.val_pearson;
    d["images_per_s"] = e.images_per_s;
    d["seconds"] = e.seconds;
    d["skipped_images"] = e.skipped;
    rows.append(d);
  }
  py::dict d;
  d["model"] = r.best_epoch > 0 ? py::object(py::str((fs::path(out) / "model.safetensors").string())) : py::object(py::none());
  d["last"] = (fs::path(out) / "last.safetensors").string();
  d["metrics"] = (fs::path(out) / "metrics.csv").string();
  d["report"] = (fs::path(out) / "report.html").string();
  d["best_epoch"] = r.best_epoch;
  d["best_val_mse"] = r.best_val_mse;
  d["diverged"] = r.diverged;
  d["epochs"] = rows;
  if (r.diverged) throw Error("train: the loss became NaN or infinite; the best epoch so far is kept in '" + out +
                              "' (start a new run with a lower lr)", ErrorKind::invalid);
  return d;
}

}  // namespace
}  // namespace ae::python

PYBIND11_MODULE(aesthete, mod) {
  using namespace ae::python;
  namespace session = ae::session;
  mod.doc() =
      "aesthete: photo aesthetics with ResNet-18, per-person taste and edits toward it; a C++20 engine, no "
      "framework. See docs/python.md.";

  g_error = PyErr_NewExceptionWithDoc("aesthete.Error", "An error of the aesthete engine (the message says what and where).",
                                      PyExc_Exception, nullptr);
  py::tuple arg_bases = py::make_tuple(py::handle(g_error), py::handle(PyExc_ValueError));
  g_argument_error = PyErr_NewExceptionWithDoc("aesthete.ArgumentError",
                                               "A bad argument or option (also a ValueError).", arg_bases.ptr(), nullptr);
  py::tuple file_bases = py::make_tuple(py::handle(g_error), py::handle(PyExc_OSError));
  g_file_error = PyErr_NewExceptionWithDoc("aesthete.FileError",
                                           "A file that cannot be read or written, or whose contents are not what "
                                           "they must be (also an OSError).",
                                           file_bases.ptr(), nullptr);
  mod.attr("Error") = py::handle(g_error);
  mod.attr("ArgumentError") = py::handle(g_argument_error);
  mod.attr("FileError") = py::handle(g_file_error);
  py::register_exception_translator(&translate);

  py::class_<User>(mod, "User", "One person's taste (adapters, BatchNorm and head) on the Model that made it.")
      .def_readonly("id", &User::id, "The user id (stored in the file)")
      .def_readonly("path", &User::path, "The file it was loaded from ('' when trained here)")
      .def_readonly("metrics", &User::metrics,
                    "personalise: rho and MSE of the generic and the personalised model on the held-out ratings "
                    "(k given), the training curve; empty for a loaded user")
      .def(
          "save",
          [](const User& u, const std::string& path) {
            Model{u.core}.run(u.state, [&](ae::model::SharedModel& shared, ae::StopFlag&) {
              shared.save_bound_user_file(path, u.id);
            });
          },
          py::arg("path"), "Writes the user file (atomic): load it with Model.load_user or `aesthete score --user`")
      .def("__repr__", [](const User& u) { return "<aesthete.User '" + u.id + "'>"; });

  py::class_<Model>(mod, "Model", "A generic model; people are Users bound onto it. Calls on one Model run one at a time.")
      .def_property_readonly("path", [](const Model& m) { return m.core->path; })
      .def_property_readonly("device", [](const Model& m) { return m.core->shared->device().str(); })
      .def_property_readonly("size", [](const Model& m) { return m.core->size; },
                             "The network side photos are squash-resized to (0: native)")
      .def_property_readonly("digest", [](const Model& m) { return m.core->shared->digest(); })
      .def_property_readonly("metadata", [](const Model& m) { return m.core->shared->metadata(); })
      .def_property_readonly("norm", [](const Model& m) {
        return py::make_tuple(m.core->shared->norm().mean, m.core->shared->norm().std);
      }, "(mean, std): stars = z * std + mean before clamping")
      .def("score", &score, py::arg("x"), py::arg("user") = py::none(), py::arg("batch") = ae::train::kScoreBatch,
           "z of a photo (path or H x W x 3 uint8 array: a float) or of many (a list of paths and/or H x W x 3 "
           "arrays, or an N x H x W x 3 array: a float32 array), for the generic model or `user`")
      .def("stars", [](const Model& m, const py::object& z) { return stars_of(z, m.core->shared->norm()); },
           py::arg("z"), "Stars 1-5 of z under this model's normalisation")
      .def(
          "load_user",
          [](const Model& m, const std::string& path) {
            User u;
            u.core = m.core;
            u.path = path;
            u.state = run_engine([&](ae::StopFlag&) { return m.core->shared->load_user(path); });
            u.id = u.state->user_id.empty() ? fs::path(path).stem().string() : u.state->user_id;
            return u;
          },
          py::arg("path"), "A user file made on this generic model (its digest is checked)")
      .def("personalise", &personalise, py::arg("images"), py::arg("ratings"), py::kw_only(), py::arg("k") = py::none(),
           py::arg("mode") = "adapters", py::arg("epochs") = py::none(), py::arg("lr") = py::none(),
           py::arg("decay_every") = py::none(), py::arg("weight_decay") = py::none(), py::arg("batch") = 30,
           py::arg("select") = "fixed", py::arg("val_fraction") = 0.2, py::arg("rating_scale") = "z",
           py::arg("seed") = 0, py::arg("user_id") = "user", py::arg("workers") = 2,
           "Learns one person's taste from their photos (a list of paths and/or H x W x 3 uint8 arrays, or an "
           "N x H x W x 3 array) and ratings; k=None trains on all of them, k=N on a seeded draw of N with the rest "
           "held out (User.metrics)")
      .def("enhance", &enhance, py::arg("x"), py::arg("user") = py::none(), py::kw_only(), py::arg("mode") = "global",
           py::arg("epsilon") = py::none(), py::arg("steps") = 10, py::arg("max_side") = 512, py::arg("eot") = 1,
           py::arg("seed") = 0,
           "Edits a photo toward a higher score: (H x W x 3 uint8 array, recipe dict)")
      .def("saliency", &saliency, py::arg("x"), py::arg("user") = py::none(), py::kw_only(), py::arg("smoothgrad") = 8,
           py::arg("noise") = 0.15, py::arg("seed") = 0, py::arg("versus_generic") = false, py::arg("full_size") = true,
           "Where the score comes from: an H x W float32 map (the photo's size; full_size=False: the network's)")
      .def("__repr__", [](const Model& m) {
        return "<aesthete.Model '" + m.core->path + "' on " + m.core->shared->device().str() + ", size " +
               std::to_string(m.core->size) + ">";
      });

  mod.def(
      "load",
      [](const py::object& path, const std::string& device, const py::object& size) {
        const std::string p = path_of(path);
        const std::string s = py::isinstance<py::int_>(size) ? std::to_string(size.cast<long long>()) : size.cast<std::string>();
        return Model{run_engine([&](ae::StopFlag&) { return load_core(p, device, s); })};
      },
      py::arg("path"), py::arg("device") = "auto", py::arg("size") = "auto",
      "Loads a generic model (.safetensors from aesthete, or a PyTorch .pth state dict). device: auto, cpu, cuda, "
      "cuda:N; size: auto (the side it was trained at), native, or 32..4096");
  mod.def("stars", [](const py::object& z) { return stars_of(z, ae::model::TargetNorm{}); }, py::arg("z"),
          "Stars 1-5 of z with the FLICKR-AES normalisation (clamp(z * 1.10017 + 3.01834, 1, 5)), as `aesthete score` "
          "prints them for models without their own");
  mod.def("photos", [](const py::object& folder) { return session::photos_in_folder(path_of(folder)); },
          py::arg("folder"), "The .jpg/.jpeg/.png files of a folder, sorted (what `aesthete score FOLDER` scores)");
  mod.def("read_image", [](const py::object& path) { return to_numpy(one_photo(path, "read_image")); }, py::arg("path"),
          "A photo as an H x W x 3 uint8 array, decoded as aesthete decodes it (EXIF orientation applied)");
  mod.def("apply_recipe", &apply_recipe, py::arg("x"), py::arg("recipe"), "Applies an enhance recipe to a photo");
  mod.def("train", &train_model, py::arg("train_csv"), py::arg("images"), py::arg("out"), py::kw_only(),
          py::arg("val_csv") = py::none(), py::arg("val_fraction") = 0.1, py::arg("init") = py::none(), py::arg("head") = "seed",
          py::arg("epochs") = 10, py::arg("batch") = 64, py::arg("lr") = 1e-3f, py::arg("lr_decay") = 0.9f,
          py::arg("decay_every") = 2, py::arg("optimizer") = "adam", py::arg("weight_decay") = 0.0f,
          py::arg("dropout") = 0.5f, py::arg("size") = 224, py::arg("resize_to") = 256,
          py::arg("resize_mode") = "squash", py::arg("device") = "auto", py::arg("workers") = 2, py::arg("seed") = 0,
          py::arg("resume") = false, py::arg("max_missing") = 0.1,
          "Trains a generic model as `aesthete train` does: the same options, the same files in out "
          "(model.safetensors, last.safetensors, metrics.csv, report.html); returns the paths, the best epoch and "
          "the epochs' rows (metrics.csv's columns). Ctrl-C saves the state (resume=True continues) and raises "
          "KeyboardInterrupt");
  mod.def(
      "set_log_level", [](const std::string& level) { ae::set_log_level(session::parse_log_level(level, "set_log_level")); },
      py::arg("level"), "debug, info (default; or AE_LOG), warn, error or quiet: what the engine prints on stderr");
  mod.def("log_level", [] { return std::string(session::log_level_name(ae::log_level())); });
  mod.def("set_conv_math", [](const std::string& m) { session::set_conv_math(m, "set_conv_math"); }, py::arg("math"),
          "CUDA convolution arithmetic: f32 (default), tf32 or bf16");
  mod.def("conv_math", [] { return session::conv_math(); });
  mod.def("set_activations", [](const std::string& a) { session::set_activations(a, "set_activations"); },
          py::arg("dtype"),
          "How models loaded from now on store the activations between layers: f32 (default) or bf16 (half the "
          "bytes; with set_conv_math('bf16') on CUDA the convolutions read them as they are)");
  mod.def("activations", [] { return session::activations(); });
  mod.def("cuda_unusable_reason", [] { return session::cuda_unusable_reason(); },
          "Why no CUDA device is usable ('' when one is)");
  mod.def("_input_copies", [] { return g_input_copies.load(); },
          "How many copies of photo arrays this module has made so far (a layout converted to C order; the photo "
          "given to enhance, saliency or apply_recipe; each array photo personalise writes as a PNG): C-contiguous "
          "uint8 arrays given to score are read in place and not counted");
  mod.attr("__version__") = "0.1";
}
