// Argument checks shared by every backend: each failure names the argument, what was
// expected and what came.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <string>

#include "cell_kind.h"

namespace rnnfast {

// The sizes of one layer in one direction.
//   T steps, B batch, I input size, H hidden size, P output size (H, or the LSTM projection),
//   G gates.
struct LayerSizes {
  CellKind kind;
  int64_t T, B, I, H, P, G;
};

LayerSizes check_forward_args(const at::Tensor& input, const at::Tensor& weight_ih,
                              const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih,
                              const std::optional<at::Tensor>& bias_hh,
                              const std::optional<at::Tensor>& hx,
                              const std::optional<at::Tensor>& cx,
                              const std::optional<at::Tensor>& weight_hr,
                              const std::optional<at::Tensor>& lengths, const std::string& cell,
                              bool batch_first);

// Checks backward's arguments: the forward's inputs it gets again (as check_forward_args),
// then what it receives against the forward's sizes.
LayerSizes check_backward_args(const std::optional<at::Tensor>& grad_output,
                               const std::optional<at::Tensor>& grad_h_n,
                               const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input,
                               const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                               const std::optional<at::Tensor>& hx,
                               const std::optional<at::Tensor>& weight_hr,
                               const std::optional<at::Tensor>& lengths, const at::Tensor& output,
                               const at::Tensor& saved, const std::string& cell, bool batch_first);

// lengths [B] on `device` (input's), for the kernels. A CPU source is taken as it is at the
// call: a pinned buffer would otherwise be read when the stream reaches the copy, after the
// caller may have refilled it. On a CUDA device, refused while the current stream is being
// captured into a CUDA graph, which cannot hold a copy from the host.
at::Tensor lengths_on_device(const at::Tensor& lengths, const at::Device& device);

// [T, B, X] or [B, T, X]: the shape of a per-step tensor in the caller's layout.
std::vector<int64_t> sequence_shape(const LayerSizes& sizes, int64_t width, bool batch_first);

}  // namespace rnnfast
