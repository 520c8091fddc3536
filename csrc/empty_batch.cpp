#include "empty_batch.h"

#include <ATen/ATen.h>

namespace rnnfast {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> empty_batch_forward(
    const LayerSizes& s, const at::Tensor& input, bool batch_first, bool need_saved) {
  const CellSpec& spec = cell_spec(s.kind);
  const auto opts = input.options();
  at::Tensor c_n = spec.has_cell_state ? at::empty({0, s.H}, opts) : at::empty({0}, opts);
  at::Tensor saved = spec.saved > 0 && need_saved
                         ? at::empty(sequence_shape(s, spec.saved * s.H, batch_first), opts)
                         : at::empty({0}, opts);
  return {at::empty(sequence_shape(s, s.P, batch_first), opts), at::empty({0, s.P}, opts), c_n,
          saved};
}

std::array<at::Tensor, 8> empty_batch_backward(const LayerSizes& s, const at::Tensor& input,
                                               bool has_projection, std::array<bool, 8> mask) {
  const auto opts = input.options();
  const bool has_cell_state = cell_spec(s.kind).has_cell_state;
  std::array<at::Tensor, 8> grads = {
      at::empty(input.sizes(), opts),    at::zeros({s.G * s.H, s.I}, opts),
      at::zeros({s.G * s.H, s.P}, opts), at::zeros({s.G * s.H}, opts),
      at::zeros({s.G * s.H}, opts),      at::empty({0, s.P}, opts),
      at::empty({0, s.H}, opts),         at::zeros({s.P, s.H}, opts),
  };
  for (size_t k = 0; k < grads.size(); ++k) {
    const bool exists = (k != 6 || has_cell_state) && (k != 7 || has_projection);
    if (!mask[k] || !exists) grads[k] = at::empty({0}, opts);
  }
  return grads;
}

}  // namespace rnnfast
