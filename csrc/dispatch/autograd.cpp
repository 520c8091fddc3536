// Autograd for recurrent_forward, registered at the Autograd key for every backend. Its
// backward is the recurrent_backward op, so torch.compile sees both as single nodes. Where a
// backward records a graph (create_graph=True), the gradients come instead from the layer
// recomputed as ATen ops (differentiable_recurrence.h), which autograd differentiates again.
// recurrent_backward has no derivative of its own: a backward through a direct call raises.
//
// This lives in C++ rather than in torch.library.register_autograd because a Python autograd
// wrapper costs more per call than a whole small layer takes.
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../cell_registry.h"
#include "../composite/differentiable_backward.h"
#include "../composite/differentiable_recurrence.h"
#include "../op_handles.h"

namespace rnnfast {
namespace {

using at::Tensor;
using std::optional;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

optional<Tensor> present(const Tensor& t) {
  return t.defined() ? optional<Tensor>(t) : std::nullopt;
}

bool requires_grad(const optional<Tensor>& t) { return t.has_value() && t->requires_grad(); }

// The ops' tuple of tensors as the list an autograd Function returns.
template <class... Ts>
variable_list as_list(const std::tuple<Ts...>& tensors) {
  return std::apply([](const auto&... t) { return variable_list{t...}; }, tensors);
}

// The slots of what RecurrentFunction saves for backward (undefined where an optional
// argument was absent): the op's tensor arguments in its order, then its outputs.
struct SavedSlot {
  enum Slot : size_t {
    kInput,
    kWeightIh,
    kWeightHh,
    kBiasIh,
    kBiasHh,
    kHx,
    kCx,
    kWeightHr,
    kLengths,
    kOutput,
    kOpSaved,  // the op's `saved` output: what its backward reads
    kCount,
  };
};
static_assert(SavedSlot::kWeightHr == 7, "the op's eight tensor arguments come first");

class RecurrentFunction : public torch::autograd::Function<RecurrentFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& weight_ih,
                               const Tensor& weight_hh, const optional<Tensor>& bias_ih,
                               const optional<Tensor>& bias_hh, const optional<Tensor>& hx,
                               const optional<Tensor>& cx, const optional<Tensor>& weight_hr,
                               const optional<Tensor>& lengths, c10::string_view cell, bool reverse,
                               bool batch_first) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [output, h_n, c_n, saved] =
        forward_op().call(input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx, weight_hr, lengths,
                          cell, reverse, batch_first, /*need_saved=*/true);
    // The biases and c0 serve only a backward that records a graph (differentiable_backward.h).
    variable_list kept(SavedSlot::kCount);
    kept[SavedSlot::kInput] = input;
    kept[SavedSlot::kWeightIh] = weight_ih;
    kept[SavedSlot::kWeightHh] = weight_hh;
    kept[SavedSlot::kBiasIh] = bias_ih.value_or(Tensor());
    kept[SavedSlot::kBiasHh] = bias_hh.value_or(Tensor());
    kept[SavedSlot::kHx] = hx.value_or(Tensor());
    kept[SavedSlot::kCx] = cx.value_or(Tensor());
    kept[SavedSlot::kWeightHr] = weight_hr.value_or(Tensor());
    kept[SavedSlot::kLengths] = lengths.value_or(Tensor());
    kept[SavedSlot::kOutput] = output;
    kept[SavedSlot::kOpSaved] = saved;
    ctx->save_for_backward(kept);
    ctx->saved_data["cell"] = std::string(cell);
    ctx->saved_data["reverse"] = reverse;
    ctx->saved_data["batch_first"] = batch_first;
    // needs_input_grad counts only the tensors present: map each argument to its edge.
    std::vector<int64_t> edges;
    int64_t next_edge = 0;
    for (bool present : {true, true, true, bias_ih.has_value(), bias_hh.has_value(), hx.has_value(),
                         cx.has_value(), weight_hr.has_value()}) {
      edges.push_back(present ? next_edge++ : -1);
    }
    ctx->saved_data["edges"] = edges;
    ctx->mark_non_differentiable({saved});
    // Unused outputs get no gradient rather than a tensor of zeros.
    ctx->set_materialize_grads(false);
    return {output, h_n, c_n, saved};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const std::vector<int64_t> edges = ctx->saved_data["edges"].toIntVector();
    std::array<bool, 8> mask;
    for (size_t k = 0; k < mask.size(); ++k) {
      mask[k] = edges[k] >= 0 && ctx->needs_input_grad(edges[k]);
    }
    const CellKind kind = parse_cell(ctx->saved_data["cell"].toStringRef());
    // Grad mode is on in a backward only where it records a graph (create_graph=True).
    if (at::GradMode::is_enabled()) {
      std::array<Tensor, 8> arguments;  // the first slots, in the op's order
      std::copy_n(s.begin(), arguments.size(), arguments.begin());
      const std::array<Tensor, 8> g = differentiable_backward(
          arguments, s[SavedSlot::kLengths], kind, ctx->saved_data["reverse"].toBool(),
          ctx->saved_data["batch_first"].toBool(), mask, {grads[0], grads[1], grads[2]});
      variable_list out(g.begin(), g.end());
      out.resize(kArguments);
      return out;
    }
    auto g = backward_op().call(
        present(grads[0]), present(grads[1]),
        cell_spec(kind).has_cell_state ? present(grads[2]) : std::nullopt, s[SavedSlot::kInput],
        s[SavedSlot::kWeightIh], s[SavedSlot::kWeightHh], present(s[SavedSlot::kHx]),
        present(s[SavedSlot::kWeightHr]), present(s[SavedSlot::kLengths]), s[SavedSlot::kOutput],
        s[SavedSlot::kOpSaved], cell_spec(kind).name, ctx->saved_data["reverse"].toBool(),
        ctx->saved_data["batch_first"].toBool(), mask);
    variable_list out = as_list(g);
    out.resize(kArguments);  // no gradients for lengths, cell, reverse, batch_first
    for (size_t k = 0; k < mask.size(); ++k) {
      if (!mask[k]) out[k] = Tensor();
    }
    return out;
  }

 private:
  static constexpr size_t kArguments = 12;
};

// The derivative of the recurrent_backward op, which rnnfast does not have. A backward through
// a layer's gradients never comes here (RecurrentFunction::backward recomputes the layer as
// differentiable ATen ops instead); a graph recorded through a direct call of the op raises at
// its backward, where the dispatcher's fallback would let it through with a warning and a
// second derivative of zero.
class RecurrentBackwardFunction : public torch::autograd::Function<RecurrentBackwardFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const optional<Tensor>& grad_output,
                               const optional<Tensor>& grad_h_n, const optional<Tensor>& grad_c_n,
                               const Tensor& input, const Tensor& weight_ih,
                               const Tensor& weight_hh, const optional<Tensor>& hx,
                               const optional<Tensor>& weight_hr, const optional<Tensor>& lengths,
                               const Tensor& output, const Tensor& saved, c10::string_view cell,
                               bool reverse, bool batch_first, std::array<bool, 8> output_mask) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return as_list(backward_op().call(grad_output, grad_h_n, grad_c_n, input, weight_ih, weight_hh,
                                      hx, weight_hr, lengths, output, saved, cell, reverse,
                                      batch_first, output_mask));
  }

  static variable_list backward(AutogradContext*, variable_list) {
    TORCH_CHECK(false,
                "rnnfast: the recurrent_backward op has no derivative. For second derivatives "
                "differentiate the forward (rnnfast's layers and functions, or "
                "rnnfast::recurrent_forward) with create_graph=True, not a direct call of "
                "recurrent_backward");
  }
};

// recurrent_backward at the Autograd key: straight below autograd (the usual backward runs
// with grad mode off), through the node above only where a graph of the gradients is recorded.
// An unboxed kernel, too: the dispatcher's boxed fallback took its 15 arguments apart at every
// backward.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>
recurrent_backward_autograd(const optional<Tensor>& grad_output, const optional<Tensor>& grad_h_n,
                            const optional<Tensor>& grad_c_n, const Tensor& input,
                            const Tensor& weight_ih, const Tensor& weight_hh,
                            const optional<Tensor>& hx, const optional<Tensor>& weight_hr,
                            const optional<Tensor>& lengths, const Tensor& output,
                            const Tensor& saved, c10::string_view cell, bool reverse,
                            bool batch_first, std::array<bool, 8> output_mask) {
  const bool records_graph =
      at::GradMode::is_enabled() &&
      (requires_grad(grad_output) || requires_grad(grad_h_n) || requires_grad(grad_c_n) ||
       input.requires_grad() || weight_ih.requires_grad() || weight_hh.requires_grad() ||
       requires_grad(hx) || requires_grad(weight_hr) || output.requires_grad());
  if (!records_graph) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return backward_op().call(grad_output, grad_h_n, grad_c_n, input, weight_ih, weight_hh, hx,
                              weight_hr, lengths, output, saved, cell, reverse, batch_first,
                              output_mask);
  }
  const variable_list g = RecurrentBackwardFunction::apply(
      grad_output, grad_h_n, grad_c_n, input, weight_ih, weight_hh, hx, weight_hr, lengths, output,
      saved, cell, reverse, batch_first, output_mask);
  return {g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]};
}

// Whether t is a dual tensor of forward-mode AD. The autograd meta is read first: _fw_grad
// goes through a virtual hook, which on every argument of every call cost 1-2 % of a small
// layer's forward.
bool has_forward_grad(const optional<Tensor>& t) {
  if (!t.has_value() || !t->defined()) return false;
  const auto* meta =
      static_cast<torch::autograd::AutogradMeta*>(t->unsafeGetTensorImpl()->autograd_meta());
  return meta != nullptr && meta->fw_grad_ != nullptr && t->_fw_grad(/*level=*/0).defined();
}

// Where the layer must run as ATen ops (forward_as_ops): under a differentiating torch.func
// transform (grad, vjp, jvp, jacrev, ...), which cannot run a C++ autograd Function, and for
// forward-mode AD's dual tensors, for which the fused op has no formula. functorch keeps its
// back-mode key included while any transform is active (vmap alone does not reach this
// kernel: it excludes the autograd keys).
bool needs_ops(const Tensor& input, const Tensor& weight_ih, const Tensor& weight_hh,
               const optional<Tensor>& bias_ih, const optional<Tensor>& bias_hh,
               const optional<Tensor>& hx, const optional<Tensor>& cx,
               const optional<Tensor>& weight_hr) {
  using c10::DispatchKey;
  return c10::impl::tls_is_dispatch_key_included(DispatchKey::FuncTorchDynamicLayerBackMode) ||
         has_forward_grad(input) || has_forward_grad(weight_ih) || has_forward_grad(weight_hh) ||
         has_forward_grad(bias_ih) || has_forward_grad(bias_hh) || has_forward_grad(hx) ||
         has_forward_grad(cx) || has_forward_grad(weight_hr);
}

std::tuple<Tensor, Tensor, Tensor, Tensor> recurrent_forward_autograd(
    const Tensor& input, const Tensor& weight_ih, const Tensor& weight_hh,
    const optional<Tensor>& bias_ih, const optional<Tensor>& bias_hh, const optional<Tensor>& hx,
    const optional<Tensor>& cx, const optional<Tensor>& weight_hr, const optional<Tensor>& lengths,
    c10::string_view cell, bool reverse, bool batch_first, bool need_saved) {
  if (needs_ops(input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx, weight_hr)) {
    return forward_as_ops(input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx, weight_hr, lengths,
                          cell, reverse, batch_first);
  }
  const bool needs_backward =
      at::GradMode::is_enabled() &&
      (input.requires_grad() || weight_ih.requires_grad() || weight_hh.requires_grad() ||
       requires_grad(bias_ih) || requires_grad(bias_hh) || requires_grad(hx) || requires_grad(cx) ||
       requires_grad(weight_hr));
  // No graph to record: the caller's need_saved stands (rnnfast.functional passes whether
  // grad mode is on; where a graph is recorded, below, the forward always keeps it).
  if (!needs_backward) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return forward_op().call(input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx, weight_hr,
                             lengths, cell, reverse, batch_first, need_saved);
  }
  const variable_list out =
      RecurrentFunction::apply(input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx, weight_hr,
                               lengths, cell, reverse, batch_first);
  return {out[0], out[1], out[2], out[3]};
}

}  // namespace
}  // namespace rnnfast

TORCH_LIBRARY_IMPL(rnnfast, Autograd, m) {
  m.impl("recurrent_forward", &rnnfast::recurrent_forward_autograd);
  m.impl("recurrent_backward", &rnnfast::recurrent_backward_autograd);
}
