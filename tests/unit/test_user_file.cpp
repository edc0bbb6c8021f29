// User files (model/user_file.h): SHA-256, the generic-model digest, the user-file layout, the
// round trip generic + user file == the user's full model, and every refusal (another generic
// model, corrupt or truncated files, wrong kind, missing/extra names, wrong shapes, wrong head).
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>


#include "model/checkpoint.h"
#include "model/safetensors.h"
#include "model/sha256.h"
#include "model/user_file.h"
#include "tests/support/check.h"
#include "tests/support/expect.h"
#include "tests/support/files.h"

using namespace ae;
using namespace ae::model;
using ae::test::bitwise_equal;
using ae::test::error_of;
using ae::test::temp_path;
namespace fs = std::filesystem;

namespace {

bool same_state(ResNet18& a, ResNet18& b) {
  const NamedTensors sa = a.state_dict(), sb = b.state_dict();
  if (sa.size() != sb.size()) return false;
  for (std::size_t i = 0; i < sa.size(); ++i)
    if (sa[i].first != sb[i].first || !bitwise_equal(sa[i].second, sb[i].second)) return false;
  return true;
}

std::string sha256_hex(const std::string& text) {
  Sha256 s;
  s.update(text);
  return s.finish_hex();
}

ModelConfig config(HeadType head, uint64_t seed) {
  ModelConfig c;
  c.head = head;
  c.seed = seed;
  return c;
}

// What personalisation changes: adapters, BatchNorm affine parameters and the head get new values,
// and two train-mode forwards move every BatchNorm's running statistics and counter.
void personalise(ResNet18& user, uint64_t seed) {
  for (ParamRef& p : user.parameters()) {
    const ParamGroup g = p.param->group;
    if (g == ParamGroup::backbone) continue;
    const uint64_t s = seed * 1000 + std::hash<std::string>{}(p.name);
    Tensor& v = p.param->value;
    if (g == ParamGroup::adapters) {
      v.copy_from(test::random_tensor(v.shape(), s, -0.05f, 0.05f));
    } else if (g == ParamGroup::bn_affine && p.name.ends_with(".weight")) {
      v.copy_from(test::random_tensor(v.shape(), s, 0.7f, 1.3f));
    } else {
      v.copy_from(test::random_tensor(v.shape(), s, -0.1f, 0.1f));
    }
  }
  user.set_training(true);
  user.set_grad_enabled(false);
  for (int i = 0; i < 2; ++i) user.forward(test::random_tensor({2, 40, 40, 3}, seed + i));
  user.set_training(false);
}

// A saved generic model, its checkpoint read back, and its digest.
struct Generic {
  std::string path;
  Checkpoint checkpoint;
  std::string digest;
};

Generic make_generic(const std::string& name, HeadType head, uint64_t seed) {
  Generic g;
  g.path = temp_path(name + ".safetensors");
  ResNet18 net(config(head, seed));
  save_checkpoint(g.path, net);
  g.checkpoint = read_checkpoint(g.path);
  g.digest = model_digest(net);
  return g;
}

// A personalised model on top of `generic`, saved as a user file.
std::unique_ptr<ResNet18> make_user(const Generic& generic, const std::string& user_path, uint64_t seed,
                                    const std::string& user_id = "") {
  std::unique_ptr<ResNet18> user = make_adapter_model(generic.checkpoint);
  personalise(*user, seed);
  save_user_file(user_path, *user, generic.digest, user_id);
  return user;
}

// One generic seed-head model and one user file on it, shared by the tests below (building and
// saving a ResNet-18 takes about half a second).
struct SeedFixture {
  Generic generic;
  std::string user_path;
  std::unique_ptr<ResNet18> user;
};

const SeedFixture& seed_fixture() {
  static const SeedFixture* fixture = [] {
    auto* f = new SeedFixture;
    f->generic = make_generic("seed_generic", HeadType::seed, 11);
    f->user_path = temp_path("seed_user.safetensors");
    f->user = make_user(f->generic, f->user_path, 21, "AGXT2OHMTWBRS");
    std::atexit([] {
      fs::remove(seed_fixture().generic.path);
      fs::remove(seed_fixture().user_path);
    });
    return f;
  }();
  return *fixture;
}

}  // namespace

TEST_CASE("sha256: FIPS 180-4 test vectors, streaming in pieces equals one update") {
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  CHECK(sha256_hex(million) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  Sha256 pieces;
  for (std::size_t at = 0, step = 1; at < million.size(); at += step, step = step % 131 + 7)
    pieces.update(million.data() + at, std::min(step, million.size() - at));
  CHECK(pieces.finish_hex() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("user file layout: adapters, every BatchNorm (affine and running statistics) and the head") {
  for (HeadType head : {HeadType::seed, HeadType::linear}) {
    INFO(head_name(head));
    ModelConfig c = config(head, 1);
    c.adapters = true;
    ResNet18 net(c);
    // The same set, derived from the model's parameter groups instead of names.
    std::set<std::string> from_groups;
    for (const StateEntry& e : net.state_entries()) {
      const bool personal_param = e.param != nullptr && e.param->group != ParamGroup::backbone;
      if (personal_param || e.buffer != nullptr || e.counter != nullptr) from_groups.insert(e.name);
    }
    std::set<std::string> from_layout;
    for (const LayoutEntry& e : user_file_layout(head)) from_layout.insert(e.name);
    CHECK(from_layout == from_groups);
    CHECK(from_layout.count("layer3.0.adapter1.weight") == 1);
    CHECK(from_layout.count("layer3.0.downsample.1.running_var") == 1);
    CHECK(from_layout.count("bn1.num_batches_tracked") == 1);
    CHECK(from_layout.count("conv1.weight") == 0);
    CHECK(from_layout.count("layer3.0.downsample.0.weight") == 0);
    CHECK(from_layout.count("fc.weight") == (head == HeadType::linear ? 1 : 0));
    CHECK(from_layout.count("head.7.running_mean") == (head == HeadType::seed ? 1 : 0));
  }
}

TEST_CASE("model digest: the weights only, not the file they came from") {
  const Generic& generic = seed_fixture().generic;  // digest taken from the model before saving
  const std::string& digest = generic.digest;
  CHECK(digest.rfind("sha256:", 0) == 0);
  CHECK(digest.size() == 7 + 64);

  // Read back from the file (with other metadata and normalisation): the same digest.
  std::unique_ptr<ResNet18> loaded = make_model(generic.checkpoint);
  CHECK(model_digest(*loaded) == digest);
  // The same model with zero adapters enabled: the same digest. Counters do not enter it.
  std::unique_ptr<ResNet18> adapted = make_adapter_model(generic.checkpoint);
  CHECK(model_digest(*adapted) == digest);
  NamedTensors sd = adapted->state_dict();
  for (auto& [name, t] : sd)
    if (name.ends_with("num_batches_tracked")) *t.data<int64_t>() = 1234;
  adapted->load_state_dict(sd);
  CHECK(model_digest(*adapted) == digest);

  // One changed running statistic changes it, and so does one weight element.
  for (auto& [name, t] : sd)
    if (name == "layer2.1.bn1.running_var") t.f32()[17] *= 1.0001f;
  adapted->load_state_dict(sd);
  const std::string changed_stat = model_digest(*adapted);
  CHECK(changed_stat != digest);
  for (auto& [name, t] : sd)
    if (name == "head.8.bias") t.f32()[0] = std::nextafter(t.f32()[0], 1.0f);
  adapted->load_state_dict(sd);
  CHECK(model_digest(*adapted) != digest);
  CHECK(model_digest(*adapted) != changed_stat);

  // A personalised model (non-zero adapters) has no generic digest.
  for (ParamRef& p : adapted->parameters())
    if (p.name == "layer4.1.adapter2.weight") p.param->value.f32()[5] = 0.25f;
  const std::string err = error_of([&] { model_digest(*adapted); });
  CHECK(err.find("layer4.1.adapter2.weight is not zero") != std::string::npos);
  CHECK(err.find("personalised model") != std::string::npos);
}

TEST_CASE("generic model + user file == the user's full model, bit for bit") {
  for (HeadType head : {HeadType::seed, HeadType::linear}) {
    INFO(head_name(head));
    Generic linear_generic;
    std::string linear_user_path;
    std::unique_ptr<ResNet18> linear_user;
    if (head == HeadType::linear) {
      linear_generic = make_generic("rt_generic_linear", head, 11);
      linear_user_path = temp_path("rt_user_linear.safetensors");
      linear_user = make_user(linear_generic, linear_user_path, 21, "AGXT2OHMTWBRS");
    }
    const bool seed = head == HeadType::seed;
    const Generic& generic = seed ? seed_fixture().generic : linear_generic;
    const std::string& user_path = seed ? seed_fixture().user_path : linear_user_path;
    ResNet18* user = seed ? seed_fixture().user.get() : linear_user.get();

    const UserFile file = read_user_file(user_path);
    CHECK(file.user_id == "AGXT2OHMTWBRS");
    CHECK(file.head == head);
    CHECK(file.generic_digest == generic.digest);
    CHECK(file.metadata.at("kind") == "user");

    std::unique_ptr<ResNet18> rebuilt = make_adapter_model(read_checkpoint(generic.path));
    const Tensor x = test::random_tensor({2, 48, 40, 3}, 99);
    rebuilt->set_grad_enabled(false);
    user->set_grad_enabled(false);
    const Tensor before = rebuilt->forward(x);
    apply_user_file(*rebuilt, file, "--model '" + generic.path + "'");
    CHECK(same_state(*rebuilt, *user));  // every parameter, running statistic and counter
    const Tensor got = rebuilt->forward(x), want = user->forward(x);
    CHECK(bitwise_equal(got, want));
    CHECK_FALSE(bitwise_equal(got, before));  // the user file did change the model
    if (!seed) {
      fs::remove(user_path);
      fs::remove(generic.path);
    }
  }
}

TEST_CASE("a user file is refused on another generic model, naming both digests, changing nothing") {
  const Generic& trained_on = seed_fixture().generic;
  const std::string& user_path = seed_fixture().user_path;
  const UserFile file = read_user_file(user_path);
  ResNet18 other_generic(config(HeadType::seed, 12));
  const std::string other_digest = model_digest(other_generic);
  std::unique_ptr<ResNet18> model =
      make_adapter_model(checkpoint_from_tensors(other_generic.state_dict(), "another generic model"));
  const NamedTensors before = model->state_dict();
  const std::string err = error_of([&] { apply_user_file(*model, file, "--model 'b.pth'"); });
  CHECK(err == "user file '" + user_path + "' was trained on generic model " + trained_on.digest +
                   ", but --model 'b.pth' has digest " + other_digest);
  const NamedTensors after = model->state_dict();
  bool unchanged = before.size() == after.size();
  for (std::size_t i = 0; unchanged && i < before.size(); ++i) unchanged = bitwise_equal(before[i].second, after[i].second);
  CHECK(unchanged);

  // A model without adapters, or with another head, is refused before any digest is computed.
  CHECK(error_of([&] { apply_user_file(other_generic, file); }).find("the model has no adapters") != std::string::npos);
  ModelConfig linear = config(HeadType::linear, 11);
  linear.adapters = true;
  ResNet18 linear_model(linear);
  CHECK(error_of([&] { apply_user_file(linear_model, file); }).find("is for a 'seed' head, but the generic model has a 'linear' head") !=
        std::string::npos);
}

TEST_CASE("user files are much smaller than the generic model") {
  const Generic& generic = seed_fixture().generic;
  const std::string& user_path = seed_fixture().user_path;
  const double generic_bytes = static_cast<double>(fs::file_size(generic.path));
  const double user_bytes = static_cast<double>(fs::file_size(user_path));
  MESSAGE("seed head: generic model " << generic_bytes / 1e6 << " MB, user file " << user_bytes / 1e6 << " MB ("
                                      << 100 * user_bytes / generic_bytes << "%)");
  CHECK(user_bytes < 0.15 * generic_bytes);
  // The tensors: 1,220,608 adapter weights, 4,800 BatchNorm channels x 4 numbers, the seed head's
  // 324,355 numbers, 22 counters; the rest is the JSON header with its CRCs.
  double data_bytes = 0;
  for (const LayoutEntry& e : user_file_layout(HeadType::seed)) {
    int64_t n = 1;
    for (int64_t d : e.shape) n *= d;
    data_bytes += static_cast<double>(n * static_cast<int64_t>(dtype_size(e.dtype)));
  }
  CHECK(data_bytes == 4.0 * (1220608 + 4800 * 4 + 324355) + 8.0 * 22);
  CHECK(user_bytes > data_bytes);
  CHECK(user_bytes < data_bytes + 64 * 1024);
}

TEST_CASE("corrupt, truncated and foreign files are refused with what and where") {
  const Generic& generic = seed_fixture().generic;
  const std::string& user_path = seed_fixture().user_path;
  const auto size = fs::file_size(user_path);

  SUBCASE("a flipped byte in the tensor data is caught by the CRC") {
    const std::string copy = temp_path("flipped.safetensors");
    fs::copy_file(user_path, copy, fs::copy_options::overwrite_existing);
    {
      std::fstream f(copy, std::ios::in | std::ios::out | std::ios::binary);
      f.seekg(static_cast<std::streamoff>(size - 1000));
      char c = 0;
      f.read(&c, 1);
      c = static_cast<char>(c ^ 0x10);
      f.seekp(static_cast<std::streamoff>(size - 1000));
      f.write(&c, 1);
    }
    const std::string err = error_of([&] { read_user_file(copy); });
    CHECK(err.find("CRC") != std::string::npos);
    fs::remove(copy);
  }
  SUBCASE("truncated") {
    const std::string copy = temp_path("truncated.safetensors");
    fs::copy_file(user_path, copy, fs::copy_options::overwrite_existing);
    fs::resize_file(copy, size / 2);
    CHECK(error_of([&] { read_user_file(copy); }).find(copy) != std::string::npos);
    fs::remove(copy);
  }
  SUBCASE("a model checkpoint is not a user file, and a user file is not a model") {
    const std::string err = error_of([&] { read_user_file(generic.path); });
    CHECK(err.find("is a 'model' file, not a user file (a model checkpoint: pass it as --model)") != std::string::npos);
    CHECK(error_of([&] { read_checkpoint(user_path); }).find("this is a 'user' file") != std::string::npos);
  }
  SUBCASE("not safetensors at all") {
    const std::string junk = temp_path("junk.safetensors");
    std::ofstream(junk) << "PK\x03\x04 not really a zip";
    CHECK(error_of([&] { read_user_file(junk); }).find("is not a user file") != std::string::npos);
    fs::remove(junk);
  }
}

TEST_CASE("user files with missing, extra or misshapen tensors or bad metadata are refused") {
  const Generic& generic = seed_fixture().generic;
  const std::string& user_path = seed_fixture().user_path;
  st::SafetensorsFile good = st::read_safetensors(user_path);
  const std::string path = temp_path("edited.safetensors");
  auto rewrite = [&](NamedTensors tensors, std::map<std::string, std::string> meta) {
    st::write_safetensors(path, tensors, meta);
    return error_of([&] { read_user_file(path); });
  };

  NamedTensors missing = good.tensors;
  std::erase_if(missing, [](const auto& p) { return p.first == "layer2.1.adapter1.weight"; });
  std::string err = rewrite(missing, good.metadata);
  CHECK(err.find("missing names (1): layer2.1.adapter1.weight") != std::string::npos);

  NamedTensors extra = good.tensors;
  extra.emplace_back("conv1.weight", Tensor::zeros({64, 3, 7, 7}));
  err = rewrite(extra, good.metadata);
  CHECK(err.find("unexpected names (1): conv1.weight") != std::string::npos);

  NamedTensors misshapen = good.tensors;
  for (auto& [name, t] : misshapen)
    if (name == "head.0.weight") t = Tensor::zeros({256, 999});
  err = rewrite(misshapen, good.metadata);
  CHECK(err.find("head.0.weight is [256,999] f32") != std::string::npos);

  auto meta = good.metadata;
  meta["generic_digest"] = "sha256:1234";
  CHECK(rewrite(good.tensors, meta).find("generic_digest 'sha256:1234' is not sha256:<64 hex digits>") != std::string::npos);
  meta = good.metadata;
  meta["head"] = "linear";
  CHECK(rewrite(good.tensors, meta).find("does not hold the trainables of a head 'linear'") != std::string::npos);
  meta = good.metadata;
  meta["format_version"] = "2";
  CHECK(rewrite(good.tensors, meta).find("format_version '2' is not supported") != std::string::npos);
  meta = good.metadata;
  meta.erase("kind");
  CHECK(rewrite(good.tensors, meta).find("is a '<missing>' file, not a user file") != std::string::npos);

  // save_user_file: only models with adapters, only well-formed digests.
  std::unique_ptr<ResNet18> plain = make_model(generic.checkpoint);
  CHECK(error_of([&] { save_user_file(path, *plain, generic.digest); }).find("the model has no adapters") !=
        std::string::npos);
  std::unique_ptr<ResNet18> adapted = make_adapter_model(generic.checkpoint);
  CHECK(error_of([&] { save_user_file(path, *adapted, "d41d8cd98f00b204e9800998ecf8427e"); })
            .find("is not sha256:<64 hex digits>") != std::string::npos);
  fs::remove(path);
}
