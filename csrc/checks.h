// Argument checks shared by every backend: each failure names the argument, what was
// expected and what came.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <string>

#include "layer_sizes.h"

namespace rnnfast {

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

// rnnfast::mm's arguments, as torch.addmm checks them: self [M, K] and mat2 [K, N] of one dtype
// and device, bias (if given) of theirs too and broadcastable to [M, N].
void check_mm_args(const at::Tensor& self, const at::Tensor& mat2,
                   const std::optional<at::Tensor>& bias);

}  // namespace rnnfast
