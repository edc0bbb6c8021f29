#include "train/score.h"

#include <algorithm>

#include "runtime/error.h"
#include "train/image.h"
#include "train/preprocess.h"

namespace ae::train {

Tensor stack_inputs(const std::vector<Tensor>& inputs) {
  AE_CHECK(!inputs.empty(), "stack_inputs: no inputs");
  if (inputs.size() == 1) return inputs[0];
  const Shape& s = inputs[0].shape();
  AE_CHECK(s.size() == 4 && s[0] == 1, "stack_inputs: input " << inputs[0].desc() << " is not [1,H,W,3]");
  Tensor x = Tensor::empty({static_cast<int64_t>(inputs.size()), s[1], s[2], s[3]});
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    AE_CHECK(inputs[i].shape() == s, "stack_inputs: input " << i << " is " << inputs[i].desc() << ", input 0 is "
                                                            << inputs[0].desc());
    x.rows(static_cast<int64_t>(i), static_cast<int64_t>(i) + 1).copy_from(inputs[i]);
  }
  return x;
}

PhotoChunkReader::PhotoChunkReader(std::vector<std::string> files, int size, int batch, std::size_t chunk_bytes)
    : files_(std::move(files)), size_(size), batch_(std::max(1, batch)), chunk_bytes_(chunk_bytes) {
  if (!files_.empty()) pending_ = std::async(std::launch::async, [this] { return decode_from(0); });
}

// A pending decode only reads the reader's own members, so waiting for it is enough.
PhotoChunkReader::~PhotoChunkReader() {
  if (pending_.valid()) pending_.wait();
}

PhotoChunk PhotoChunkReader::next() {
  AE_CHECK(pending_.valid(), "PhotoChunkReader::next: no photos left");
  Part part = pending_.get();  // leaves pending_ invalid, also when it throws
  if (part.next_file < files_.size())
    pending_ = std::async(std::launch::async, [this, first = part.next_file] { return decode_from(first); });
  return std::move(part.chunk);
}

PhotoChunkReader::Part PhotoChunkReader::decode_from(std::size_t first) const {
  Part part;
  std::size_t next = first, bytes = 0;
  const std::size_t per_batch = size_ > 0 ? static_cast<std::size_t>(batch_) : 1;
  while (next < files_.size() && (part.chunk.batches.empty() || bytes < chunk_bytes_)) {
    PhotoBatch b;
    std::vector<Tensor> inputs;
    for (; next < files_.size() && inputs.size() < per_batch; ++next) {
      try {
        inputs.push_back(img::preprocess_eval(img::read_image(files_[next]), size_));
        b.names.push_back(files_[next]);
      } catch (const Error& e) {
        part.chunk.failures.push_back(e.what());
      }
    }
    if (inputs.empty()) continue;
    b.x = stack_inputs(inputs);
    bytes += b.x.nbytes();
    part.chunk.batches.push_back(std::move(b));
  }
  part.next_file = next;
  return part;
}

}  // namespace ae::train
