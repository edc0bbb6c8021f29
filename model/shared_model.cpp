#include "model/shared_model.h"

#include <set>
#include <unordered_map>

namespace ae::model {

const char* scope_name(StateScope s) { return s == StateScope::user ? "user" : "all"; }

UserState UserState::clone() const {
  UserState out;
  out.user_id = user_id;
  out.scope = scope;
  out.entries.reserve(entries.size());
  for (const Entry& e : entries) {
    Entry c = e;
    if (e.value.defined()) c.value = e.value.clone();
    out.entries.push_back(std::move(c));
  }
  return out;
}

int64_t UserState::nbytes() const {
  int64_t n = 0;
  for (const Entry& e : entries) n += e.is_counter ? 8 : static_cast<int64_t>(e.value.nbytes());
  return n;
}

namespace {

// The entry's current value, shared (not copied).
UserState::Entry capture_entry(const StateEntry& e) {
  UserState::Entry out;
  out.name = e.name;
  if (e.param != nullptr) {
    out.value = e.param->value;
  } else if (e.buffer != nullptr) {
    out.value = *e.buffer;
  } else {
    out.is_counter = true;
    out.counter = *e.counter;
  }
  return out;
}

std::set<std::string> scope_names(HeadType head, StateScope scope) {
  std::set<std::string> names;
  if (scope == StateScope::all) {
    for (const LayoutEntry& e : expected_layout(head, /*adapters=*/true)) names.insert(e.name);
  } else {
    for (const LayoutEntry& e : user_file_layout(head)) names.insert(e.name);
  }
  return names;
}

}  // namespace

SharedModel::SharedModel(const Checkpoint& generic, Device device, const std::string& name, const ModelConfig& base)
    : norm_(generic.norm), metadata_(generic.metadata), name_(name), device_(device) {
  AE_CHECK(generic.config.head != HeadType::imagenet,
           name << " is an ImageNet classifier (fc 512->1000, no aesthetics head); train one with `aesthete train "
                   "--init ...` first");
  net_ = make_adapter_model(generic, base);
  // Computed once per loaded file. A model whose adapters are not zero is a personalised model: it
  // can be scored, but it has no digest, so no user file can go on top of it (digest() says why).
  try {
    digest_ = model_digest(*net_);
  } catch (const Error& e) {
    digest_error_ = name + ": " + e.what();
  }
  net_->set_training(false);
  net_->to(device);
  entries_ = net_->state_entries();
  generic_ = std::make_shared<UserState>();
  generic_->scope = StateScope::all;
  for (const StateEntry& e : entries_) generic_->entries.push_back(capture_entry(e));
  bound_ = generic_;
}

void SharedModel::bind(std::shared_ptr<UserState> state) {
  AE_CHECK(state != nullptr, "SharedModel::bind: no state");
  std::unordered_map<std::string, const StateEntry*> by_name;
  by_name.reserve(entries_.size());
  for (const StateEntry& e : entries_) by_name.emplace(e.name, &e);
  // Check everything before changing anything: a failed bind leaves the old binding intact.
  for (const UserState::Entry& s : state->entries) {
    const auto it = by_name.find(s.name);
    AE_CHECK(it != by_name.end(), "cannot bind state of user '" << state->user_id << "': " << name_
                                                                  << " has no entry '" << s.name << "'");
    const StateEntry& e = *it->second;
    AE_CHECK(s.is_counter == (e.counter != nullptr), "cannot bind '" << s.name << "': counter/tensor mismatch");
    if (!s.is_counter) {
      const Tensor& cur = e.param != nullptr ? e.param->value : *e.buffer;
      AE_CHECK(s.value.shape() == cur.shape() && s.value.dtype() == cur.dtype() && s.value.device() == cur.device(),
               "cannot bind '" << s.name << "': " << s.value.desc() << " where the model has " << cur.desc());
    }
  }
  // The counters are plain integers in the layers: hand them back to the state bound so far. Also
  // when that is `state` itself: then the layers hold its live counts (training advanced them), which
  // its entries must not overwrite. To apply new counter values to the bound state, bind another
  // state first.
  write_back_counters();
  for (const UserState::Entry& s : state->entries) {
    const StateEntry& e = *by_name.at(s.name);
    if (e.param != nullptr) {
      e.param->value = s.value;
      e.param->grad = Tensor();
    } else if (e.buffer != nullptr) {
      *e.buffer = s.value;
    } else {
      *e.counter = s.counter;
    }
  }
  bound_ = std::move(state);
}

void SharedModel::bind_generic() { bind(generic_); }

void SharedModel::write_back_counters() {
  if (bound_ == nullptr) return;
  std::unordered_map<std::string, int64_t> counters;
  for (const StateEntry& e : entries_)
    if (e.counter != nullptr) counters.emplace(e.name, *e.counter);
  for (UserState::Entry& s : bound_->entries)
    if (s.is_counter) s.counter = counters.at(s.name);
}

std::shared_ptr<UserState> SharedModel::snapshot() {
  write_back_counters();
  return std::make_shared<UserState>(bound_->clone());
}

std::shared_ptr<UserState> SharedModel::fresh_state(StateScope scope, const std::string& user_id) const {
  const std::set<std::string> names = scope_names(head(), scope);
  auto out = std::make_shared<UserState>();
  out->user_id = user_id;
  out->scope = scope;
  for (const UserState::Entry& e : generic_->entries) {
    if (!names.count(e.name)) continue;
    UserState::Entry c = e;
    if (e.value.defined()) c.value = e.value.clone();
    out->entries.push_back(std::move(c));
  }
  return out;
}

const std::string& SharedModel::digest() const {
  AE_CHECK(digest_error_.empty(), digest_error_);
  return digest_;
}

std::shared_ptr<UserState> SharedModel::state_from_file(const UserFile& file) const {
  AE_CHECK(file.head == head(), "user file '" << file.path << "' is for a '" << head_name(file.head) << "' head, but "
                                              << name_ << " has a '" << head_name(head()) << "' head");
  AE_CHECK(file.generic_digest == digest(), "user file '" << file.path << "' was trained on generic model "
                                                         << file.generic_digest << ", but " << name_
                                                         << " has digest " << digest_);
  std::unordered_map<std::string, const Tensor*> by_name;
  for (const auto& [n, t] : file.tensors) by_name.emplace(n, &t);
  auto out = std::make_shared<UserState>();
  out->user_id = file.user_id;
  out->scope = StateScope::user;
  for (const StateEntry& e : entries_) {
    const auto it = by_name.find(e.name);
    if (it == by_name.end()) continue;
    const Tensor& t = *it->second;
    UserState::Entry s;
    s.name = e.name;
    if (e.counter != nullptr) {
      s.is_counter = true;
      s.counter = *t.to(Device::cpu()).data<int64_t>();
    } else {
      s.value = (e.conv_weight ? oihw_to_ohwi(t) : t.to(Device::cpu()).clone()).to(device_);
    }
    out->entries.push_back(std::move(s));
  }
  AE_CHECK(out->entries.size() == file.tensors.size(),
           "user file '" << file.path << "': " << file.tensors.size() - out->entries.size()
                         << " tensors have no place in " << name_);
  return out;
}

std::shared_ptr<UserState> SharedModel::load_user(const std::string& path) const {
  return state_from_file(read_user_file(path));
}

void SharedModel::save_bound_user_file(const std::string& path, const std::string& user_id) {
  const std::string& generic_digest = digest();  // an argument error, before the file is touched
  rethrow_as_file_error([&] { save_user_file(path, *net_, generic_digest, user_id); });
}

}  // namespace ae::model
