#pragma once
// Per-user states for tests of the shared backbone (model/shared_model.h): a generic checkpoint to
// build a SharedModel from, and a random "trained" user state on top of it.
#include <cstdint>
#include <memory>
#include <string>

#include "model/shared_model.h"
#include "tests/support/check.h"

namespace ae::test {

// A generic seed-head model with default initialisation (seeded), as a checkpoint.
inline model::Checkpoint generic_checkpoint(uint64_t seed = 7) {
  model::ModelConfig cfg;
  cfg.seed = seed;
  model::ResNet18 net(cfg);
  return model::checkpoint_from_tensors(net.state_dict(), "generic");
}

// A user state whose adapters, BatchNorms (running statistics and counters included) and head are
// moved randomly, as a trained user's would be. The values are made on the host, so states built
// with the same seed on two devices hold the same numbers.
inline std::shared_ptr<model::UserState> random_user(const model::SharedModel& shared, uint64_t seed,
                                                     const std::string& id) {
  auto s = shared.fresh_state(model::StateScope::user, id);
  for (auto& e : s->entries) {
    if (e.is_counter) {
      e.counter = static_cast<int64_t>(seed);
      continue;
    }
    const bool positive =
        e.name.ends_with("running_var") || (e.name.ends_with(".weight") && e.name.find("bn") != std::string::npos);
    e.value.copy_from(positive ? random_tensor(e.value.shape(), ++seed, 0.7f, 1.3f)
                               : random_tensor(e.value.shape(), ++seed, -0.05f, 0.05f));
  }
  return s;
}

}  // namespace ae::test
