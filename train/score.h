#pragma once
// Scoring photos (`aesthete score`, the Python module's score): the eval-mode forward of the state
// bound to a SharedModel over photos preprocessed by img::preprocess_eval, a batch at a time.
//
// A photo's score depends on the batch it is in, in the last bits (the CPU convolutions' summation
// order depends on the batch size: a photo scored alone and within 16 differed by 3e-7 at 32 px), so
// the front ends batch the same way and print the same bits: up to `batch` consecutive photos of one
// size per forward (kScoreBatch by default), native-size photos one at a time.
#include <vector>

#include "model/shared_model.h"
#include "runtime/tensor.h"

namespace ae::train {

inline constexpr int kScoreBatch = 16;

// [1,S,S,3] inputs of one size stacked into [N,S,S,3] (a single input is returned as it is).
Tensor stack_inputs(const std::vector<Tensor>& inputs);

// The z of each row of `x` ([N,S,S,3], any device) under the bound state: eval mode, no gradients
// (the network's training and gradient flags are set for it and left so).
std::vector<float> score_inputs(model::SharedModel& shared, const Tensor& x);

}  // namespace ae::train
