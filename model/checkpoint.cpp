#include "model/checkpoint.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "model/safetensors.h"

namespace ae::model {
namespace {

// The shortest text that reads back as exactly `v` ("3.0183403576", not "3.0183403576000001").
std::string format_double(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

double parse_double(const std::map<std::string, std::string>& meta, const char* key, double fallback,
                    const std::string& path) {
  const auto it = meta.find(key);
  if (it == meta.end()) return fallback;
  char* end = nullptr;
  const double v = std::strtod(it->second.c_str(), &end);
  AE_CHECK(end != it->second.c_str() && *end == '\0' && std::isfinite(v),
           path << ": metadata " << key << " = '" << it->second << "' is not a number");
  return v;
}

}  // namespace

FileFormat sniff_format(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  AE_CHECK(f.good(), "cannot open '" << path << "'");
  unsigned char head[9] = {};
  f.read(reinterpret_cast<char*>(head), sizeof head);
  const std::streamsize got = f.gcount();
  if (got >= 4 && head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4) return FileFormat::pth_zip;
  if (got == 9 && head[8] == '{') {
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | head[i];
    if (n >= 2) return FileFormat::safetensors;
  }
  return FileFormat::unknown;
}

void save_checkpoint(const std::string& path, ResNet18& model, const TargetNorm& norm,
                     const std::map<std::string, std::string>& extra) {
  AE_CHECK(std::isfinite(norm.mean) && std::isfinite(norm.std) && norm.std > 0,
           "save_checkpoint '" << path << "': target normalisation mean " << norm.mean << " std " << norm.std
                               << " must be finite with std > 0");
  std::map<std::string, std::string> meta = extra;
  meta["format"] = kCheckpointFormat;
  meta["format_version"] = kCheckpointVersion;
  meta["kind"] = "model";
  meta["head"] = head_name(model.config().head);
  meta["adapters"] = model.config().adapters ? "true" : "false";
  meta["target_mean"] = format_double(norm.mean);
  meta["target_std"] = format_double(norm.std);
  st::write_safetensors(path, model.state_dict(), meta);
}

Checkpoint checkpoint_from_tensors(NamedTensors tensors, const std::string& what) {
  Checkpoint c;
  const DetectedLayout d = detect_layout(tensors, what);
  c.config.head = d.head;
  c.config.adapters = d.adapters;
  c.tensors = std::move(tensors);
  return c;
}

Checkpoint read_checkpoint(const std::string& path) {
  const FileFormat format = sniff_format(path);
  AE_CHECK(format == FileFormat::safetensors,
           "'" << path << "' is not a safetensors file"
               << (format == FileFormat::pth_zip ? " (it is a PyTorch zip checkpoint: load it through weights_tools)"
                                                 : ""));
  st::SafetensorsFile file = st::read_safetensors(path);
  const auto& meta = file.metadata;
  if (const auto it = meta.find("format"); it != meta.end()) {
    AE_CHECK(it->second == kCheckpointFormat, path << ": metadata format '" << it->second << "' is not '"
                                                   << kCheckpointFormat << "'");
    const auto v = meta.find("format_version");
    AE_CHECK(v != meta.end() && v->second == kCheckpointVersion,
             path << ": format_version '" << (v == meta.end() ? std::string("<missing>") : v->second)
                  << "' is not supported (this build reads version " << kCheckpointVersion << ")");
  }
  if (const auto k = meta.find("kind"); k != meta.end()) {
    AE_CHECK(k->second == "model", path << ": this is a '" << k->second
                                        << "' file, not a model checkpoint (a user file loads on top of its generic model)");
  }
  Checkpoint c = checkpoint_from_tensors(std::move(file.tensors), "'" + path + "'");
  c.metadata = meta;
  if (const auto h = meta.find("head"); h != meta.end()) {
    AE_CHECK(parse_head(h->second) == c.config.head,
             path << ": metadata says head '" << h->second << "' but the tensors are a '" << head_name(c.config.head)
                  << "' layout");
  }
  if (const auto a = meta.find("adapters"); a != meta.end()) {
    AE_CHECK(a->second == "true" || a->second == "false",
             path << ": metadata adapters = '" << a->second << "' (expected true or false)");
    AE_CHECK((a->second == "true") == c.config.adapters,
             path << ": metadata says adapters " << a->second << " but the tensors "
                  << (c.config.adapters ? "have" : "have no") << " adapters");
  }
  c.norm.mean = parse_double(meta, "target_mean", c.norm.mean, path);
  c.norm.std = parse_double(meta, "target_std", c.norm.std, path);
  AE_CHECK(c.norm.std > 0, path << ": target_std " << c.norm.std << " must be > 0");
  return c;
}

std::unique_ptr<ResNet18> make_model(const Checkpoint& checkpoint, const ModelConfig& base) {
  ModelConfig config = base;
  config.head = checkpoint.config.head;
  config.adapters = checkpoint.config.adapters;
  auto model = std::make_unique<ResNet18>(config);
  model->load_state_dict(checkpoint.tensors);
  model->set_training(false);
  return model;
}

}  // namespace ae::model
