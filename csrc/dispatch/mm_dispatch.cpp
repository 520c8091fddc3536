// rnnfast::mm (schema: ops.cpp) on every backend but the CPU (whose kernel is cpu/mm_cpu.cpp):
// ATen's addmm; and its Autograd kernel, whose gradients are products by the op itself, so
// that they run on the engine's GEMM too and a backward that records a graph differentiates
// them again.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <vector>

#include "../checks.h"
#include "../op_handles.h"

namespace rnnfast {
namespace {

using at::Tensor;
using std::optional;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// self [M, K], mat2 [K, N], bias broadcastable to [M, N] -> [M, N].
Tensor mm_aten(const Tensor& self, const Tensor& mat2, const optional<Tensor>& bias) {
  check_mm_args(self, mat2, bias);
  return bias.has_value() ? at::addmm(*bias, self, mat2) : at::mm(self, mat2);
}

class MmFunction : public torch::autograd::Function<MmFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& self, const Tensor& mat2,
                        const optional<Tensor>& bias) {
    at::AutoDispatchBelowADInplaceOrView guard;
    // Each operand serves only the other's gradient.
    ctx->save_for_backward(
        {mat2.requires_grad() ? self : Tensor(), self.requires_grad() ? mat2 : Tensor()});
    ctx->saved_data["bias_sizes"] = bias.has_value() ? bias->sizes().vec() : std::vector<int64_t>{};
    ctx->saved_data["has_bias"] = bias.has_value();
    return mm_op().call(self, mat2, bias);
  }

  // grad [M, N] -> (grad @ mat2^T [M, K], self^T @ grad [K, N], grad summed to bias's shape).
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor& grad = grads[0];
    variable_list out(3);
    if (ctx->needs_input_grad(0)) out[0] = mm_op().call(grad, saved[1].t(), std::nullopt);
    if (ctx->needs_input_grad(1)) out[1] = mm_op().call(saved[0].t(), grad, std::nullopt);
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) {
      out[2] = grad.sum_to_size(ctx->saved_data["bias_sizes"].toIntVector());
    }
    return out;
  }
};

Tensor mm_autograd(const Tensor& self, const Tensor& mat2, const optional<Tensor>& bias) {
  return MmFunction::apply(self, mat2, bias);
}

}  // namespace
}  // namespace rnnfast

TORCH_LIBRARY_IMPL(rnnfast, CompositeExplicitAutograd, m) { m.impl("mm", &rnnfast::mm_aten); }

TORCH_LIBRARY_IMPL(rnnfast, Autograd, m) { m.impl("mm", &rnnfast::mm_autograd); }
