// A layer's recurrence as ordinary ATen ops, through the cells' own math (cells.h, on whole
// [B, H] tensors), which autograd differentiates to any order and torch.func transforms. The
// fused kernels have a first derivative only; where a backward itself records a graph
// (create_graph=True, as for a gradient penalty), differentiable_backward.h takes the gradients
// through this instead, so that a second backward gets the second derivative.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

#include "../cell_registry.h"

namespace rnnfast {

// The arguments and results of rnnfast::recurrent_forward (without `saved`): input [T, B, I]
// (or [B, T, I] batch-first), weight_ih [G*H, I], weight_hh [G*H, P], biases [G*H],
// hx [B, P], cx [B, H], weight_hr [P, H], lengths [B]. Returns output [T, B, P] (or
// batch-first), h_n [B, P] and c_n [B, H] (undefined for cells without a cell state).
// Reduced-precision inputs are computed in float32, as the kernels do, and the results cast
// back. No checks: it is called on arguments the op has accepted.
std::tuple<at::Tensor, at::Tensor, at::Tensor> differentiable_recurrence(
    const at::Tensor& input, const at::Tensor& weight_ih, const at::Tensor& weight_hh,
    const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
    const std::optional<at::Tensor>& hx, const std::optional<at::Tensor>& cx,
    const std::optional<at::Tensor>& weight_hr, const std::optional<at::Tensor>& lengths,
    CellKind kind, bool reverse, bool batch_first);

// rnnfast::recurrent_forward as ATen ops, for where the fused op cannot serve: torch.func's
// transforms (which cannot run a C++ autograd Function, and vmap, which would otherwise loop
// over the batch) and forward-mode AD. Checks the arguments as the op does; returns
// (output, h_n, c_n, saved) with c_n empty for cells without a cell state and `saved` empty
// (nothing reads it: autograd differentiates the ops themselves).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward_as_ops(
    const at::Tensor& input, const at::Tensor& weight_ih, const at::Tensor& weight_hh,
    const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
    const std::optional<at::Tensor>& hx, const std::optional<at::Tensor>& cx,
    const std::optional<at::Tensor>& weight_hr, const std::optional<at::Tensor>& lengths,
    c10::string_view cell, bool reverse, bool batch_first);

}  // namespace rnnfast
