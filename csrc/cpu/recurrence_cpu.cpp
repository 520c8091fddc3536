// The CPU recurrence engine: one layer in one direction, for every cell of cells.h, as the
// CPU kernels of the recurrent_forward and recurrent_backward ops.
//
//   recurrence_layer.h  the layer: sizes, sequence layout and lengths, recurrent weights
//   recurrence_plan.h   chunking, weight copies and packing, thread slicing, scratch layout
//   forward_pass.h      the forward's step loop
//   backward_pass.h     the backward's reverse loop and its gradients
//   step_rows.h         the pointwise passes over a step's rows (cells.h's math)
//   chunk_gradients.h   the weight, input and bias gradients over a chunk of steps
//   weight_layout.h     weight operands: row and column views, transposed copies
//   row_layout.h        per-step rows in the caller's layout, row loops, output tensors
//
// Per-step tensors are kept in the caller's layout ([T, B, X] or [B, T, X]); Seq maps a
// (step, batch) pair to its row.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <string>

#include "../cell_registry.h"
#include "../checks.h"
#include "../empty_batch.h"
#include "backward_pass.h"
#include "forward_pass.h"
#include "recurrence_layer.h"

namespace rnnfast::cpu {
namespace {

using at::Tensor;
using std::optional;

template <class F>
decltype(auto) dispatch_dtype(const Tensor& t, F&& f) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return f(float{});
    case at::kDouble:
      return f(double{});
    case at::kBFloat16:
      return f(at::BFloat16{});
    case at::kHalf:
      return f(at::Half{});
    default:
      TORCH_CHECK_TYPE(false, "rnnfast: input must be float32, float64, bfloat16 or float16; got ",
                       t.scalar_type());
  }
}

std::tuple<Tensor, Tensor, Tensor, Tensor> recurrent_forward_cpu(
    const Tensor& input, const Tensor& weight_ih, const Tensor& weight_hh,
    const optional<Tensor>& bias_ih, const optional<Tensor>& bias_hh, const optional<Tensor>& hx,
    const optional<Tensor>& cx, const optional<Tensor>& weight_hr, const optional<Tensor>& lengths,
    c10::string_view cell, bool reverse, bool batch_first, bool need_saved) {
  const LayerSizes sizes = check_forward_args(input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx,
                                              weight_hr, lengths, std::string(cell), batch_first);
  if (sizes.B == 0) return empty_batch_forward(sizes, input, batch_first, need_saved);
  return dispatch_cell(sizes.kind, [&](auto cell_type) {
    using Cell = decltype(cell_type);
    return dispatch_dtype(input, [&](auto scalar) {
      using scalar_t = decltype(scalar);
      const Recurrence<Cell, scalar_t> layer(sizes, reverse, batch_first, weight_hh, weight_hr,
                                             lengths);
      return ForwardPass<Cell, scalar_t>(layer, input, weight_ih, bias_ih, bias_hh, hx, cx,
                                         need_saved)
          .run();
    });
  });
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> recurrent_backward_cpu(
    const optional<Tensor>& grad_output, const optional<Tensor>& grad_h_n,
    const optional<Tensor>& grad_c_n, const Tensor& input, const Tensor& weight_ih,
    const Tensor& weight_hh, const optional<Tensor>& hx, const optional<Tensor>& weight_hr,
    const optional<Tensor>& lengths, const Tensor& output, const Tensor& saved,
    c10::string_view cell, bool reverse, bool batch_first, std::array<bool, 8> output_mask) {
  const LayerSizes sizes =
      check_backward_args(grad_output, grad_h_n, grad_c_n, input, weight_ih, weight_hh, hx,
                          weight_hr, lengths, output, saved, std::string(cell), batch_first);
  if (sizes.B == 0) {
    const auto g = empty_batch_backward(sizes, input, weight_hr.has_value(), output_mask);
    return {g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]};
  }
  const auto grads = dispatch_cell(sizes.kind, [&](auto cell_type) {
    using Cell = decltype(cell_type);
    return dispatch_dtype(input, [&](auto scalar) {
      using scalar_t = decltype(scalar);
      const Recurrence<Cell, scalar_t> layer(sizes, reverse, batch_first, weight_hh, weight_hr,
                                             lengths);
      return BackwardPass<Cell, scalar_t>(layer, grad_output, grad_h_n, grad_c_n, input, weight_ih,
                                          hx, output, saved, output_mask)
          .run();
    });
  });
  return {grads[0], grads[1], grads[2], grads[3], grads[4], grads[5], grads[6], grads[7]};
}

}  // namespace
}  // namespace rnnfast::cpu

TORCH_LIBRARY_IMPL(rnnfast, CPU, m) {
  m.impl("recurrent_forward", &rnnfast::cpu::recurrent_forward_cpu);
  m.impl("recurrent_backward", &rnnfast::cpu::recurrent_backward_cpu);
}
