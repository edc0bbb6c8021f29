#include "train/loader.h"

#include <algorithm>
#include <numeric>

#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/philox.h"
#include "train/image.h"

namespace ae::data {

Loader::Loader(std::vector<Sample> samples, LoaderConfig config)
    : samples_(std::move(samples)), config_(std::move(config)) {
  AE_CHECK(config_.batch > 0, "loader: batch size must be positive, got " << config_.batch);
  AE_CHECK(config_.workers >= 1, "loader: need at least one worker thread, got " << config_.workers);
  AE_CHECK(config_.prefetch >= 1, "loader: prefetch must be at least 1");
  AE_CHECK(config_.shards >= 1 && config_.shard >= 0 && config_.shard < config_.shards,
           "loader: shard " << config_.shard << " of " << config_.shards << " does not exist");
}

Loader::~Loader() { stop_workers(); }

int64_t Loader::batches_per_epoch() const {
  const int64_t n = size(), b = config_.batch;
  return config_.drop_last ? n / b : (n + b - 1) / b;
}

std::vector<int64_t> Loader::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order(samples_.size());
  std::iota(order.begin(), order.end(), 0);
  if (config_.shuffle) {
    // Fisher-Yates driven by the counter RNG: the permutation depends only on (seed, epoch).
    const uint64_t key = config_.seed * 0xD1B54A32D192ED03ull + static_cast<uint64_t>(epoch) + 1;
    for (int64_t i = static_cast<int64_t>(order.size()) - 1; i > 0; --i) {
      const uint64_t r = (static_cast<uint64_t>(philox::u32(key, 2 * i)) << 32) | philox::u32(key, 2 * i + 1);
      std::swap(order[i], order[static_cast<int64_t>(r % static_cast<uint64_t>(i + 1))]);
    }
  }
  return order;
}

void Loader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
  stopping_ = false;
}

void Loader::start_epoch(int64_t epoch, int64_t first_batch) {
  stop_workers();
  AE_CHECK(first_batch >= 0 && first_batch <= batches_per_epoch(),
           "loader: cannot start at batch " << first_batch << " of " << batches_per_epoch());
  epoch_ = epoch;
  order_ = epoch_order(epoch);
  next_to_claim_ = next_to_return_ = first_batch;
  end_batch_ = batches_per_epoch();
  ready_.clear();
  for (int i = 0; i < config_.workers; ++i) threads_.emplace_back([this] { worker_loop(); });
}

void Loader::worker_loop() {
  for (;;) {
    int64_t b;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] {
        return stopping_ || next_to_claim_ >= end_batch_ || next_to_claim_ < next_to_return_ + config_.prefetch;
      });
      if (stopping_ || next_to_claim_ >= end_batch_) return;
      b = next_to_claim_++;
    }
    Batch batch;
    std::string error;
    try {
      batch = make_batch(b);
    } catch (const std::exception& e) {  // e.g. out of memory: hand it to the consumer
      error = e.what();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error.empty()) worker_error_ = error;
      ready_.emplace(b, std::move(batch));
    }
    cv_.notify_all();
  }
}

Batch Loader::make_batch(int64_t b) {
  const int64_t batch_begin = b * config_.batch;
  const int64_t len = std::min<int64_t>(batch_begin + config_.batch, size()) - batch_begin;
  const int64_t begin = batch_begin + len * config_.shard / config_.shards;
  const int64_t end = batch_begin + len * (config_.shard + 1) / config_.shards;
  const int side = config_.transform.size;
  const int64_t per_image = static_cast<int64_t>(side) * side * 3;
  std::vector<float> pixels;
  pixels.reserve(static_cast<std::size_t>((end - begin) * per_image));
  Batch out;
  out.index = b;
  std::vector<float> targets;
  for (int64_t i = begin; i < end; ++i) {
    const int64_t s = order_[static_cast<std::size_t>(i)];
    const Sample& sample = samples_[static_cast<std::size_t>(s)];
    try {
      const img::Image im = img::read_image(sample.path);
      pixels.resize(pixels.size() + static_cast<std::size_t>(per_image));
      apply_transform(im, config_.transform, config_.seed, static_cast<uint64_t>(epoch_), static_cast<uint64_t>(s),
                      pixels.data() + pixels.size() - per_image);
      targets.push_back(sample.target);
      out.samples.push_back(s);
    } catch (const Error& e) {
      ++out.skipped;
      std::lock_guard<std::mutex> lock(mutex_);
      if (failures_.emplace(sample.path, e.what()).second) AE_WARN("skipping image: " << e.what());
    }
  }
  const int64_t n = static_cast<int64_t>(out.samples.size());
  out.images = Tensor::from_vector({n, side, side, 3}, pixels);
  out.targets = Tensor::from_vector({n, 1}, targets);
  return out;
}

std::optional<Batch> Loader::next() {
  std::unique_lock<std::mutex> lock(mutex_);
  AE_CHECK(!threads_.empty() || next_to_return_ >= end_batch_, "loader: next() before start_epoch()");
  if (next_to_return_ >= end_batch_) return std::nullopt;
  cv_.wait(lock, [&] { return ready_.count(next_to_return_) > 0; });
  AE_CHECK(worker_error_.empty(), "loader: a worker failed: " << worker_error_);
  auto node = ready_.extract(next_to_return_);
  ++next_to_return_;
  lock.unlock();
  cv_.notify_all();
  return std::move(node.mapped());
}

std::map<std::string, std::string> Loader::failures() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return failures_;
}

}  // namespace ae::data
