#pragma once
// A batch loader with worker threads that decode and augment ahead of the consumer.
//
// Order and augmentation are pure functions of (seed, epoch, position), so a run is repeatable
// with any number of workers and resumes exactly from (epoch, batch). Images that are missing or
// cannot be decoded are skipped (counted, and logged once each); a batch is then smaller.
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "runtime/tensor.h"
#include "train/transforms.h"

namespace ae::data {

struct Sample {
  std::string path;  // image file
  float target = 0;  // z score
};

struct Batch {
  int64_t index = 0;              // batch number within the epoch
  Tensor images;                  // [B,size,size,3] f32 CPU, B <= batch size
  Tensor targets;                 // [B,1]
  std::vector<int64_t> samples;   // sample indices (into the loader's list) of the rows
  int64_t skipped = 0;            // unreadable images dropped from this batch
};

struct LoaderConfig {
  int64_t batch = 64;
  int workers = 2;
  int prefetch = 4;        // batches decoded ahead of the consumer
  bool shuffle = true;
  bool drop_last = false;
  uint64_t seed = 0;
  TransformConfig transform;
  // Data-parallel training: this loader decodes only shard `shard` of `shards` of every batch
  // (rows [len * shard / shards, len * (shard + 1) / shards) of the batch's len rows), so the
  // shards of all ranks together are exactly the batch of one loader with shards = 1.
  int shard = 0, shards = 1;
};

class Loader {
 public:
  Loader(std::vector<Sample> samples, LoaderConfig config);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  int64_t size() const { return static_cast<int64_t>(samples_.size()); }
  int64_t batches_per_epoch() const;
  // Sample order of an epoch: a seeded permutation (or identity without shuffle).
  std::vector<int64_t> epoch_order(int64_t epoch) const;

  // Starts producing the batches of `epoch` from batch `first_batch` on (resume).
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  // The next batch in order, or nullopt at the end of the epoch.
  std::optional<Batch> next();

  // Paths that failed to load so far, with the reason.
  std::map<std::string, std::string> failures() const;

 private:
  void stop_workers();
  void worker_loop();
  Batch make_batch(int64_t b);

  std::vector<Sample> samples_;
  LoaderConfig config_;

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
  bool stopping_ = false;
  int64_t epoch_ = 0;
  std::vector<int64_t> order_;
  int64_t next_to_claim_ = 0;     // next batch a worker may start
  int64_t next_to_return_ = 0;    // next batch next() hands out
  int64_t end_batch_ = 0;
  std::map<int64_t, Batch> ready_;
  std::map<std::string, std::string> failures_;
  std::string worker_error_;  // a non-image failure inside a worker, rethrown by next()
};

}  // namespace ae::data
