// A layer's gradients as differentiable functions of its arguments and of the upstream
// gradients, for a backward that records a graph (create_graph=True, as for a gradient
// penalty): the fused backward op has no derivative of its own.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>

#include "../cell_registry.h"

namespace rnnfast {

// arguments: (input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx, weight_hr) as the forward
// got them (undefined where absent); grads: the upstream gradients of (output, h_n, c_n),
// undefined where none came. Returns the gradients of the arguments marked in `wanted`
// (undefined for the others), which autograd can differentiate again, to any order.
std::array<at::Tensor, 8> differentiable_backward(const std::array<at::Tensor, 8>& arguments,
                                                  const at::Tensor& lengths, CellKind kind,
                                                  bool reverse, bool batch_first,
                                                  const std::array<bool, 8>& wanted,
                                                  const std::array<at::Tensor, 3>& grads);

}  // namespace rnnfast
