// A batch of no sequences (B = 0), which torch.nn's layers accept: every result has its shape
// and nothing is computed. Shared by the backends, whose engines (and CUDA grids) need B > 0.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <tuple>

#include "checks.h"

namespace rnnfast {

// (output, h_n, c_n, saved) with the shapes the engines give them.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> empty_batch_forward(
    const LayerSizes& sizes, const at::Tensor& input, bool batch_first, bool need_saved);

// Gradients of (input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx, weight_hr): zeros for
// the parameters (no sequence contributes to them), empty for the per-sequence tensors, and
// a 0-element tensor for those not asked for in `mask` or not in the layer, as the engines
// return.
std::array<at::Tensor, 8> empty_batch_backward(const LayerSizes& sizes, const at::Tensor& input,
                                               bool has_projection, std::array<bool, 8> mask);

}  // namespace rnnfast
