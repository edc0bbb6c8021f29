#include "model/user_file.h"

#include <bit>
#include <cstring>
#include <map>
#include <set>
#include <sstream>

#include "model/safetensors.h"
#include "model/sha256.h"

namespace ae::model {
namespace {

constexpr const char* kDigestPrefix = "sha256:";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool well_formed_digest(const std::string& d) {
  if (d.size() != std::strlen(kDigestPrefix) + 64 || d.rfind(kDigestPrefix, 0) != 0) return false;
  for (std::size_t i = std::strlen(kDigestPrefix); i < d.size(); ++i)
    if (!((d[i] >= '0' && d[i] <= '9') || (d[i] >= 'a' && d[i] <= 'f'))) return false;
  return true;
}

std::string joined_shape(const Shape& shape) {
  std::string s;
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s;
}

// The user file's tensors against user_file_layout(head): every name exactly once (the layout
// has no optional entries), exact shapes and dtypes.
void check_user_tensors(const NamedTensors& tensors, HeadType head, const std::string& path) {
  const std::vector<LayoutEntry> layout = user_file_layout(head);
  const LayoutDiff diff = diff_layout(tensors, layout);
  if (diff.empty()) return;
  AE_FAIL("user file '" << path << "' does not hold the trainables of a head '" << head_name(head)
                        << "' model with adapters (" << tensors.size() << " tensors, " << layout.size()
                        << " expected)" << diff.describe(12, 12));
}

// An entry as it is stored in files: PyTorch layout, on the CPU (may share the model's storage:
// read only).
Tensor file_layout_view(const StateEntry& e) {
  if (e.param == nullptr) return e.buffer->to(Device::cpu());
  const Tensor host = e.param->value.to(Device::cpu());
  return e.conv_weight ? ohwi_to_oihw(host) : host;
}

}  // namespace

std::vector<LayoutEntry> user_file_layout(HeadType head) {
  const std::vector<LayoutEntry> full = expected_layout(head, /*adapters=*/true);
  // A BatchNorm is recognised by its running mean; all five of its entries go into the file.
  std::set<std::string> batchnorm_prefixes;
  for (const LayoutEntry& e : full)
    if (ends_with(e.name, "running_mean")) batchnorm_prefixes.insert(e.name.substr(0, e.name.size() - 12));
  std::vector<LayoutEntry> out;
  for (LayoutEntry e : full) {
    const std::string prefix = e.name.substr(0, e.name.rfind('.') + 1);
    if (e.part == Part::adapters || e.part == Part::head || batchnorm_prefixes.count(prefix)) {
      e.optional = false;  // we always write num_batches_tracked, so a file without it is damaged
      out.push_back(e);
    }
  }
  return out;
}

std::string model_digest(ResNet18& model) {
  Sha256 sha;
  for (const StateEntry& e : model.state_entries()) {
    if (e.counter != nullptr) continue;
    const Tensor t = file_layout_view(e);
    AE_CHECK(t.dtype() == DType::f32, "model_digest: " << e.name << " is " << t.desc() << ", expected f32");
    if (e.param != nullptr && e.param->group == ParamGroup::adapters) {
      const float* p = t.f32();
      for (int64_t i = 0; i < t.numel(); ++i)
        AE_CHECK(p[i] == 0.0f, "model_digest: " << e.name << " is not zero: this is a personalised model, not a "
                                                   "generic one (only a generic model has a digest)");
      continue;
    }
    sha.update(e.name);
    sha.update("\0", 1);
    sha.update(joined_shape(t.shape()));
    sha.update("\0", 1);
    static_assert(std::endian::native == std::endian::little, "the digest hashes little-endian float32 bytes");
    sha.update(t.raw(), t.nbytes());
  }
  return kDigestPrefix + sha.finish_hex();
}

void save_user_file(const std::string& path, ResNet18& user_model, const std::string& generic_digest,
                    const std::string& user_id) {
  AE_CHECK(user_model.config().adapters,
           "save_user_file '" << path << "': the model has no adapters (a user model is a generic model with adapters "
                                         "enabled, then personalised)");
  AE_CHECK(well_formed_digest(generic_digest), "save_user_file '" << path << "': generic digest '" << generic_digest
                                                                  << "' is not sha256:<64 hex digits> (model_digest)");
  std::set<std::string> wanted;
  for (const LayoutEntry& e : user_file_layout(user_model.config().head)) wanted.insert(e.name);
  NamedTensors tensors;
  for (auto& [name, t] : user_model.state_dict())
    if (wanted.count(name)) tensors.emplace_back(name, std::move(t));
  std::map<std::string, std::string> meta;
  meta["format"] = kCheckpointFormat;
  meta["format_version"] = kCheckpointVersion;
  meta["kind"] = kUserFileKind;
  meta["head"] = head_name(user_model.config().head);
  meta["adapters"] = "true";
  meta["generic_digest"] = generic_digest;
  if (!user_id.empty()) meta["user_id"] = user_id;
  check_user_tensors(tensors, user_model.config().head, path);  // our own contract, before writing
  st::write_safetensors(path, tensors, meta);
}

namespace {

UserFile read_user_file_unchecked_kind(const std::string& path) {
  const FileFormat format = sniff_format(path);
  AE_CHECK(format == FileFormat::safetensors,
           "'" << path << "' is not a user file: user files are safetensors files written by aesthete"
               << (format == FileFormat::pth_zip ? " (this is a PyTorch zip checkpoint)" : ""));
  st::SafetensorsFile file = st::read_safetensors(path);
  const auto& meta = file.metadata;
  auto get = [&](const char* key) -> std::string {
    const auto it = meta.find(key);
    return it == meta.end() ? std::string("<missing>") : it->second;
  };
  AE_CHECK(get("format") == kCheckpointFormat,
           "'" << path << "' is not an aesthete user file (metadata format '" << get("format") << "')");
  AE_CHECK(get("format_version") == kCheckpointVersion,
           "'" << path << "': format_version '" << get("format_version") << "' is not supported (this build reads version "
               << kCheckpointVersion << ")");
  const std::string kind = get("kind");
  AE_CHECK(kind == kUserFileKind, "'" << path << "' is a '" << kind << "' file, not a user file"
                                      << (kind == "model" ? " (a model checkpoint: pass it as --model)" : ""));
  UserFile u;
  u.path = path;
  try {
    u.head = parse_head(get("head"));
  } catch (const Error& e) {
    AE_FAIL("'" << path << "': user file metadata: " << e.what());
  }
  AE_CHECK(get("adapters") == "true", "'" << path << "': user file metadata adapters = '" << get("adapters")
                                          << "' (user files always hold adapters)");
  u.generic_digest = get("generic_digest");
  AE_CHECK(well_formed_digest(u.generic_digest), "'" << path << "': generic_digest '" << u.generic_digest
                                                     << "' is not sha256:<64 hex digits>");
  if (const auto it = meta.find("user_id"); it != meta.end()) u.user_id = it->second;
  check_user_tensors(file.tensors, u.head, path);
  u.tensors = std::move(file.tensors);
  u.metadata = meta;
  return u;
}

}  // namespace

// Whatever goes wrong here is about the file (ErrorKind::file); the digest check against a model
// (apply_user_file, SharedModel::state_from_file) is an argument error.
UserFile read_user_file(const std::string& path) {
  return rethrow_as_file_error([&] { return read_user_file_unchecked_kind(path); });
}

void apply_user_file(ResNet18& model, const UserFile& user, const std::string& model_name) {
  AE_CHECK(model.config().adapters, "cannot apply user file '" << user.path << "' to " << model_name
                                                               << ": the model has no adapters (make_adapter_model)");
  AE_CHECK(model.config().head == user.head, "user file '" << user.path << "' is for a '" << head_name(user.head)
                                                           << "' head, but " << model_name << " has a '"
                                                           << head_name(model.config().head) << "' head");
  const std::string digest = model_digest(model);
  AE_CHECK(digest == user.generic_digest, "user file '" << user.path << "' was trained on generic model "
                                                        << user.generic_digest << ", but " << model_name
                                                        << " has digest " << digest);
  check_user_tensors(user.tensors, user.head, user.path);  // a UserFile not from read_user_file
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : user.tensors) by_name[name] = &t;
  for (const StateEntry& e : model.state_entries()) {
    const auto it = by_name.find(e.name);
    if (it == by_name.end()) continue;
    e.load_from_file(*it->second);
  }
}

std::unique_ptr<ResNet18> make_adapter_model(const Checkpoint& generic, const ModelConfig& base) {
  ModelConfig config = base;
  config.head = generic.config.head;
  config.adapters = true;
  auto model = std::make_unique<ResNet18>(config);
  LoadOptions options;
  options.allow_missing_adapters = true;
  model->load_state_dict(generic.tensors, options);
  model->set_training(false);
  return model;
}

}  // namespace ae::model
