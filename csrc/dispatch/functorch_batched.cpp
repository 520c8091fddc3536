// recurrent_forward under torch.func.vmap: the layer as ATen ops (forward_as_ops), whose
// batching rules vectorise over the mapped dimension. Without this kernel vmap's fallback
// calls the op once per mapped element, with a warning.
#include <torch/library.h>

#include "../composite/differentiable_recurrence.h"

namespace rnnfast {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> recurrent_forward_batched(
    const at::Tensor& input, const at::Tensor& weight_ih, const at::Tensor& weight_hh,
    const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
    const std::optional<at::Tensor>& hx, const std::optional<at::Tensor>& cx,
    const std::optional<at::Tensor>& weight_hr, const std::optional<at::Tensor>& lengths,
    c10::string_view cell, bool reverse, bool batch_first, bool /*need_saved*/) {
  return forward_as_ops(input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx, weight_hr, lengths,
                        cell, reverse, batch_first);
}

}  // namespace
}  // namespace rnnfast

TORCH_LIBRARY_IMPL(rnnfast, FuncTorchBatched, m) {
  m.impl("recurrent_forward", &rnnfast::recurrent_forward_batched);
}
