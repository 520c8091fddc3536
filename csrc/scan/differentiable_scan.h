// rnnfast.scan's loop under autograd without Python per call: the forward runs the step's
// program through rnnfast::scan_run keeping the carry before each step (and the products its
// backward reads), and the autograd node's backward runs the step's backward program
// (rnnfast/_scan/lower_vjp.py) through the same op. What it cannot take (tensors the engine
// does not run, a vjp without a backward program) runs through the Python autograd.Function of
// rnnfast/_scan/recurrence.py instead.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace rnnfast::scan {

struct DifferentiableScan {
  int64_t program;           // handle: the forward program (that keeps the products, if any)
  int64_t backward_program;  // handle: the step's backward program
  int64_t boundary;          // how many of the forward's boundary values the caller gets (the
                             // others are the products kept for the backward)
  // The forward program's weights as views of `weights` (rnnfast/_scan/lower.py's
  // loop_weight_views): per program weight [k, n, ops..], weights[k] through n views in order,
  // 4 ints each: (0, dim, start, end) a slice, (1, 0, 0, 0) a transpose. None: `weights` are
  // the program's weights. The gradients are the given weights'.
  std::optional<std::vector<int64_t>> weight_views;
  // Where each weight of the backward program comes from, as 2 * k + transposed: the forward
  // program's weight k or its transpose; none: backward_weights holds them.
  std::optional<std::vector<int64_t>> backward_weight_sources;
  std::optional<at::Tensor> mask;  // bool [steps, B] or none
  int64_t steps;
  bool reverse;
};

// carry: [B, cols] per carry slot; seqs: [steps, B, cols] per sequence slot; weights: as the
// forward program reads them, or what call.weight_views makes them of; backward_weights: as the
// backward program reads them (values of the weights alone), where call.backward_weight_sources
// does not say. Returns the final carry [B, cols] each, then the boundary values [steps, B, cols]
// each, differentiable with respect to carry, seqs and weights (once: a backward that records a
// graph gives gradients that raise if differentiated).
std::vector<at::Tensor> run_differentiable(const DifferentiableScan& call, at::TensorList carry,
                                           at::TensorList seqs, at::TensorList weights,
                                           at::TensorList backward_weights);

// The program's weights made of `weights` by DifferentiableScan::weight_views' codes (none:
// `weights` as they are).
std::vector<at::Tensor> program_weights(const std::optional<std::vector<int64_t>>& weight_views,
                                        at::TensorList weights);

// How many backward loops the nodes of run_differentiable have run (for the tests).
int64_t differentiable_backward_runs();

}  // namespace rnnfast::scan
