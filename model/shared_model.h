#pragma once
// One generic model in memory, many people (DESIGN.md "Per-user state on a shared backbone").
//
// A SharedModel loads a generic checkpoint once, enables the residual adapters (zero, so it still
// computes the generic model), places it on a device and computes the generic digest once. A
// person is a UserState: that person's tensors, by PyTorch name, in the model's internal layouts
// on the model's device. Binding a state makes the network's parameters and buffers *be* the
// state's tensors (the handles are swapped, nothing is copied), so switching people costs a walk
// over ~120 entries, training a bound state writes into that state, and A -> B -> A gives A's
// outputs bit for bit.
//
// Scopes: a `user` state holds exactly the entries of a user file (adapters, every backbone
// BatchNorm with its running statistics, the head: user_file_layout); an `all` state holds every
// entry (full fine-tuning changes the convolutions too). Binding a user-scope state leaves the
// other entries as they are, so bind_generic() first when a full-scope state was bound before.
//
// The generic state (every entry as loaded) is never written by this class: personalisation binds
// a clone (fresh_state) and trains that. Code that trains whatever is bound must do the same.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/checkpoint.h"
#include "model/resnet18.h"
#include "model/user_file.h"

namespace ae::model {

enum class StateScope { user, all };
const char* scope_name(StateScope s);

struct UserState {
  struct Entry {
    std::string name;    // PyTorch name
    Tensor value;        // internal layout (conv weights OHWI); undefined for a counter
    int64_t counter = 0; // num_batches_tracked
    bool is_counter = false;
  };
  std::string user_id;  // "" for the generic state or an unnamed user
  StateScope scope = StateScope::user;
  std::vector<Entry> entries;  // state-dict order

  // A deep copy on the same device.
  UserState clone() const;
  // Bytes of tensor data (counters count 8 bytes each).
  int64_t nbytes() const;
};

class SharedModel {
 public:
  // `generic` should be a generic model (no adapters, or adapters that are all zero) with an
  // aesthetics head; a personalised model file loads too but takes no user files. `name` names it in messages ("--model 'g.safetensors'").
  SharedModel(const Checkpoint& generic, Device device, const std::string& name, const ModelConfig& base = {});
  SharedModel(const SharedModel&) = delete;
  SharedModel& operator=(const SharedModel&) = delete;

  ResNet18& net() { return *net_; }
  const TargetNorm& norm() const { return norm_; }
  // The checkpoint's metadata (input_size, ...), as stored.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  HeadType head() const { return net_->config().head; }
  // The generic digest (model_digest), computed once at construction; an error for a model with
  // non-zero adapters (a personalised model is scored as it is, but takes no user file).
  const std::string& digest() const;
  const std::string& name() const { return name_; }
  Device device() const { return device_; }

  // Binds `state` (see the file comment). The model's BatchNorm counters are written back into
  // the state bound before (`state` itself when it is bound already), so that state stays complete
  // after training; parameter gradients are dropped. The binding keeps `state` alive.
  void bind(std::shared_ptr<UserState> state);
  // Binds the generic model (every entry).
  void bind_generic();
  std::shared_ptr<UserState> bound() const { return bound_; }
  // A deep copy of the bound state as it is now (BatchNorm counters included).
  std::shared_ptr<UserState> snapshot();

  // A clone of the generic model's entries of `scope`, ready to bind and train.
  std::shared_ptr<UserState> fresh_state(StateScope scope, const std::string& user_id = "") const;
  // A user file as a state, after checking its head and that it was trained on this model
  // (digest). Nothing is bound.
  std::shared_ptr<UserState> state_from_file(const UserFile& file) const;
  std::shared_ptr<UserState> load_user(const std::string& path) const;
  // The bound state's user-file entries written as a user file (atomic).
  void save_bound_user_file(const std::string& path, const std::string& user_id);

 private:
  TargetNorm norm_;
  std::map<std::string, std::string> metadata_;
  std::unique_ptr<ResNet18> net_;
  std::string digest_;
  std::string digest_error_;
  std::string name_;
  Device device_;
  std::shared_ptr<UserState> generic_;  // every entry, as loaded; never written
  std::shared_ptr<UserState> bound_;
  void write_back_counters();

  std::vector<StateEntry> entries_;  // the network's entries (stable pointers), state-dict order
};

}  // namespace ae::model
