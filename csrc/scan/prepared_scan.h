// rnnfast.scan's usual call into the engine, with all but its tensors fixed once per lowered
// loop (rnnfast/_scan/engine.py's LoopEngine.lifted_call): the programs' handles, the loop's
// weights as views of the step's lifted tensors, where the backward's weights come from. A
// call passes only its tensors, steps and direction, and is differentiable where grad mode is
// on and one of them requires grad.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "differentiable_scan.h"

namespace rnnfast::scan {

class PreparedScan {
 public:
  // program: the forward program; keeping_program: the forward that also keeps per step what
  // the backward reads (program itself where that is nothing); backward_program: the
  // backward's handle, or -1 where it is not lowered yet; boundary: how many boundary values
  // the caller gets. weight_views, backward_weight_sources: as DifferentiableScan's.
  PreparedScan(int64_t program, int64_t keeping_program, int64_t backward_program, int64_t boundary,
               std::vector<int64_t> weight_views,
               std::optional<std::vector<int64_t>> backward_weight_sources);

  // carry: [B, cols] each; seqs: [steps, B, cols] each; lifted: the step's lifted tensors.
  // (final carry [B, cols] each, boundary values [steps, B, cols] each); none where the call
  // needs autograd and there is no backward program yet.
  std::optional<std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>>> run(
      at::TensorList carry, at::TensorList seqs, at::TensorList lifted, int64_t steps,
      bool reverse) const;

 private:
  int64_t program_;
  DifferentiableScan differentiable_;  // steps and reverse set per call; never a mask
};

}  // namespace rnnfast::scan
