#pragma once
// Scoring photos (`aesthete score`, the Python module's score): the eval-mode forward of the state
// bound to a SharedModel over photos preprocessed by img::preprocess_eval, a batch at a time.
//
// A photo's score depends on the batch it is in, in the last bits (the CPU convolutions' summation
// order depends on the batch size: a photo scored alone and within 16 differed by 3e-7 at 32 px), so
// the front ends batch the same way and print the same bits: up to `batch` consecutive photos of one
// size per forward (kScoreBatch by default), native-size photos one at a time.
#include <cstddef>
#include <future>
#include <string>
#include <vector>

#include "model/shared_model.h"
#include "runtime/tensor.h"

namespace ae::train {

inline constexpr int kScoreBatch = 16;

// [1,S,S,3] inputs of one size stacked into [N,S,S,3] (a single input is returned as it is).
Tensor stack_inputs(const std::vector<Tensor>& inputs);

// Photos read from files for scoring: batches of up to `batch` photos preprocessed to `size`
// (size 0: native size, one photo per batch), in file order.
struct PhotoBatch {
  std::vector<std::string> names;
  Tensor x;  // [names.size(), S, S, 3]
};
struct PhotoChunk {
  std::vector<PhotoBatch> batches;
  std::vector<std::string> failures;  // "path: why" of each unreadable photo, in file order
};

// Reads files a chunk at a time (batches until they hold `chunk_bytes` of network input; at least
// one batch, so 0 means one batch per chunk), decoding the next chunk on a background thread while the caller scores the current
// one: decoding a JPEG and resizing it is serial work that otherwise leaves the cores the network
// uses idle (`aesthete score` on a folder, bench/RESULTS.md). At most two chunks are in memory.
// What is read, and so every score, is the same as reading in the caller's thread.
class PhotoChunkReader {
 public:
  PhotoChunkReader(std::vector<std::string> files, int size, int batch, std::size_t chunk_bytes);
  ~PhotoChunkReader();
  PhotoChunkReader(const PhotoChunkReader&) = delete;
  PhotoChunkReader& operator=(const PhotoChunkReader&) = delete;

  bool done() const { return !pending_.valid(); }
  // The next chunk (call only while !done()); rethrows what decoding threw other than an
  // unreadable photo (which is listed in `failures`).
  PhotoChunk next();

 private:
  struct Part {
    PhotoChunk chunk;
    std::size_t next_file = 0;
  };
  Part decode_from(std::size_t first) const;

  std::vector<std::string> files_;
  int size_, batch_;
  std::size_t chunk_bytes_;
  std::future<Part> pending_;
};

}  // namespace ae::train
