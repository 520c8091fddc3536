// The CUDA engine (cuda/recurrence_engine.h) run on the CPU, for the tests: its step loop,
// GEMM operands and the element code of its kernels (cuda/step_elements.h) checked against the
// reference without a GPU. Not a backend: slow (one element at a time) and not registered for
// any dispatch key; the tests install it in place of the CPU kernels (tests/test_cuda_on_host.py).
// Same arguments and results as the ops rnnfast::recurrent_forward and recurrent_backward
// (csrc/ops.cpp), CPU tensors of float32, float64, float16 or bfloat16.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>

namespace rnnfast::cuda_on_host {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> recurrent_forward(
    const at::Tensor& input, const at::Tensor& weight_ih, const at::Tensor& weight_hh,
    const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
    const std::optional<at::Tensor>& hx, const std::optional<at::Tensor>& cx,
    const std::optional<at::Tensor>& weight_hr, const std::optional<at::Tensor>& lengths,
    const std::string& cell, bool reverse, bool batch_first, bool need_saved);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
recurrent_backward(const std::optional<at::Tensor>& grad_output,
                   const std::optional<at::Tensor>& grad_h_n,
                   const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input,
                   const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                   const std::optional<at::Tensor>& hx, const std::optional<at::Tensor>& weight_hr,
                   const std::optional<at::Tensor>& lengths, const at::Tensor& output,
                   const at::Tensor& saved, const std::string& cell, bool reverse, bool batch_first,
                   std::array<bool, 8> output_mask);

}  // namespace rnnfast::cuda_on_host
