#include "model/model_layout.h"

#include <map>
#include <set>
#include <sstream>

namespace ae::model {

const char* head_name(HeadType h) {
  switch (h) {
    case HeadType::seed: return "seed";
    case HeadType::linear: return "linear";
    case HeadType::imagenet: return "imagenet";
  }
  return "?";
}

HeadType parse_head(const std::string& text) {
  if (text == "seed") return HeadType::seed;
  if (text == "linear") return HeadType::linear;
  if (text == "imagenet") return HeadType::imagenet;
  // The text may come from a file: quoted at most 100 characters long.
  AE_FAIL("unknown head type '" << text.substr(0, 100) << (text.size() > 100 ? "...' (cut)" : "'")
                                << " (expected seed, linear or imagenet)");
}

namespace {

struct LayoutBuilder {
  std::vector<LayoutEntry> entries;

  void add(const std::string& name, Shape shape, Part part, DType dtype = DType::f32, bool optional = false) {
    entries.push_back(LayoutEntry{name, std::move(shape), dtype, part, optional});
  }
  void conv(const std::string& prefix, int64_t out, int64_t in, int64_t k, Part part = Part::backbone) {
    add(prefix + "weight", {out, in, k, k}, part);
  }
  void bn(const std::string& prefix, int64_t c, Part part = Part::backbone) {
    add(prefix + "weight", {c}, part);
    add(prefix + "bias", {c}, part);
    add(prefix + "running_mean", {c}, part);
    add(prefix + "running_var", {c}, part);
    add(prefix + "num_batches_tracked", {}, part, DType::i64, /*optional=*/true);
  }
  void linear(const std::string& prefix, int64_t out, int64_t in, Part part) {
    add(prefix + "weight", {out, in}, part);
    add(prefix + "bias", {out}, part);
  }
};

// Lists at most `limit` items, then "... and N more".
std::string list_names(const std::vector<std::string>& names, std::size_t limit) {
  std::ostringstream os;
  for (std::size_t i = 0; i < names.size() && i < limit; ++i) os << (i ? ", " : "") << names[i];
  if (names.size() > limit) os << ", ... and " << names.size() - limit << " more";
  return os.str();
}

}  // namespace

std::vector<LayoutEntry> expected_layout(HeadType head, bool adapters) {
  LayoutBuilder b;
  b.conv("conv1.", 64, 3, 7);
  b.bn("bn1.", 64);
  const int64_t widths[4] = {64, 128, 256, 512};
  int64_t in = 64;
  for (int layer = 0; layer < 4; ++layer) {
    const int64_t out = widths[layer];
    for (int block = 0; block < 2; ++block) {
      const std::string p = "layer" + std::to_string(layer + 1) + "." + std::to_string(block) + ".";
      const int64_t block_in = block == 0 ? in : out;
      b.conv(p + "conv1.", out, block_in, 3);
      b.bn(p + "bn1.", out);
      b.conv(p + "conv2.", out, out, 3);
      b.bn(p + "bn2.", out);
      if (block == 0 && layer > 0) {
        b.conv(p + "downsample.0.", out, block_in, 1);
        b.bn(p + "downsample.1.", out);
      }
      if (adapters) {
        b.conv(p + "adapter1.", out, block_in, 1, Part::adapters);
        b.conv(p + "adapter2.", out, out, 1, Part::adapters);
      }
    }
    in = out;
  }
  if (head == HeadType::linear) {
    b.linear("fc.", 1, 512, Part::head);
  } else {
    b.linear("fc.", 1000, 512, Part::backbone);
  }
  if (head == HeadType::seed) {
    b.linear("head.0.", 256, 1000, Part::head);
    b.add("head.1.weight", {1}, Part::head);
    b.bn("head.3.", 256, Part::head);
    b.linear("head.4.", 256, 256, Part::head);
    b.add("head.5.weight", {1}, Part::head);
    b.bn("head.7.", 256, Part::head);
    b.linear("head.8.", 1, 256, Part::head);
  }
  return b.entries;
}

bool LayoutDiff::empty() const {
  return unexpected.empty() && missing.empty() && mismatched.empty() && duplicated.empty();
}

std::string LayoutDiff::describe(std::size_t limit, std::size_t mismatch_limit) const {
  std::ostringstream os;
  if (!unexpected.empty()) os << "\n  unexpected names (" << unexpected.size() << "): " << list_names(unexpected, limit);
  if (!missing.empty()) os << "\n  missing names (" << missing.size() << "): " << list_names(missing, limit);
  if (!mismatched.empty())
    os << "\n  shape/dtype mismatches (" << mismatched.size() << "): " << list_names(mismatched, mismatch_limit);
  if (!duplicated.empty()) os << "\n  duplicated names (" << duplicated.size() << "): " << list_names(duplicated, limit);
  return os.str();
}

LayoutDiff diff_layout(const NamedTensors& tensors, const std::vector<LayoutEntry>& layout,
                       const LoadOptions& options) {
  std::map<std::string, const LayoutEntry*> by_name;
  for (const LayoutEntry& e : layout) by_name[e.name] = &e;

  LayoutDiff diff;
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    if (!seen.insert(name).second) {
      diff.duplicated.push_back(name);
      continue;
    }
    const auto it = by_name.find(name);
    if (it == by_name.end()) {
      diff.unexpected.push_back(name);
      continue;
    }
    const LayoutEntry& e = *it->second;
    if (!t.defined() || t.shape() != e.shape || t.dtype() != e.dtype) {
      diff.mismatched.push_back(name + " is " + t.desc() + ", expected " + shape_str(e.shape) + " " +
                                dtype_name(e.dtype));
    }
  }
  for (const LayoutEntry& e : layout) {
    if (seen.count(e.name) || e.optional) continue;
    if (e.part == Part::head && options.allow_missing_head) continue;
    if (e.part == Part::adapters && options.allow_missing_adapters) continue;
    diff.missing.push_back(e.name);
  }
  return diff;
}

void check_layout(const NamedTensors& tensors, HeadType head, bool adapters, const LoadOptions& options,
                  const std::string& what) {
  const std::vector<LayoutEntry> layout = expected_layout(head, adapters);
  const LayoutDiff diff = diff_layout(tensors, layout, options);
  if (diff.empty()) return;
  AE_FAIL(what << " does not match the ResNet-18 layout with head '" << head_name(head) << "' and adapters "
               << (adapters ? "on" : "off") << " (" << tensors.size() << " tensors, " << layout.size()
               << " expected)" << diff.describe(24, 12));
}

DetectedLayout detect_layout(const NamedTensors& tensors, const std::string& what) {
  DetectedLayout d;
  bool has_head = false;
  const Tensor* fc_weight = nullptr;
  for (const auto& [name, t] : tensors) {
    if (name.rfind("head.", 0) == 0) has_head = true;
    if (name.find(".adapter1.") != std::string::npos || name.find(".adapter2.") != std::string::npos) d.adapters = true;
    if (name == "fc.weight") fc_weight = &t;
  }
  if (has_head) {
    d.head = HeadType::seed;
  } else if (fc_weight != nullptr && fc_weight->defined() && fc_weight->shape() == Shape{1, 512}) {
    d.head = HeadType::linear;
  } else {
    // A plain torchvision classifier; anything else (no fc at all, odd shapes, foreign names)
    // is reported by check_layout below against this closest layout.
    d.head = HeadType::imagenet;
  }
  check_layout(tensors, d.head, d.adapters, LoadOptions{}, what);
  return d;
}

}  // namespace ae::model
