#include "train/score.h"

#include "runtime/error.h"

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

std::vector<float> score_inputs(model::SharedModel& shared, const Tensor& x) {
  model::ResNet18& net = shared.net();
  net.set_training(false);
  net.set_grad_enabled(false);
  return net.forward(x.to(shared.device())).to_vector();
}

}  // namespace ae::train
