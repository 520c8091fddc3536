// Autograd for recurrent_forward, registered at the Autograd key for every backend. Its
// backward is the recurrent_backward op, so torch.compile sees both as single nodes.
// recurrent_backward has no derivative of its own: a backward through it raises.
//
// This lives in C++ rather than in torch.library.register_autograd because a Python autograd
// wrapper costs about 80 us per call here, more than a whole small layer takes.
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

#include "op_handles.h"

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
    ctx->save_for_backward({input, weight_ih, weight_hh, hx.value_or(Tensor()),
                            weight_hr.value_or(Tensor()), lengths.value_or(Tensor()), output,
                            saved});
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
    const std::string cell = ctx->saved_data["cell"].toStringRef();
    auto g = backward_op().call(
        present(grads[0]), present(grads[1]), cell == "lstm" ? present(grads[2]) : std::nullopt,
        s[0], s[1], s[2], present(s[3]), present(s[4]), present(s[5]), s[6], s[7], cell,
        ctx->saved_data["reverse"].toBool(), ctx->saved_data["batch_first"].toBool(), mask);
    variable_list out = as_list(g);
    out.resize(12);  // no gradients for lengths, cell, reverse, batch_first
    for (size_t k = 0; k < mask.size(); ++k) {
      if (!mask[k]) out[k] = Tensor();
    }
    return out;
  }
};

// The derivative of recurrent_backward, which rnnfast does not have: a second backward through
// a layer (create_graph=True, then backward again, as for a gradient penalty) raises here.
// Without this node the dispatcher's fallback lets it through with a warning and a second
// derivative of zero.
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
    return as_list(backward_op().call(grad_output, grad_h_n, grad_c_n, input, weight_ih,
                                      weight_hh, hx, weight_hr, lengths, output, saved, cell,
                                      reverse, batch_first, output_mask));
  }

  static variable_list backward(AutogradContext*, variable_list) {
    TORCH_CHECK(false,
                "rnnfast: the second derivative of a recurrent layer is not implemented (a "
                "backward through the gradients of rnnfast's RNN, GRU or LSTM, as after "
                "torch.autograd.grad(..., create_graph=True)); use torch.nn's layers where a "
                "double backward is needed");
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

std::tuple<Tensor, Tensor, Tensor, Tensor> recurrent_forward_autograd(
    const Tensor& input, const Tensor& weight_ih, const Tensor& weight_hh,
    const optional<Tensor>& bias_ih, const optional<Tensor>& bias_hh, const optional<Tensor>& hx,
    const optional<Tensor>& cx, const optional<Tensor>& weight_hr, const optional<Tensor>& lengths,
    c10::string_view cell, bool reverse, bool batch_first, bool need_saved) {
  const bool needs_backward =
      at::GradMode::is_enabled() &&
      (input.requires_grad() || weight_ih.requires_grad() || weight_hh.requires_grad() ||
       requires_grad(bias_ih) || requires_grad(bias_hh) || requires_grad(hx) || requires_grad(cx) ||
       requires_grad(weight_hr));
  // No graph to record: the caller's need_saved stands (false only from eager inference
  // calls; traced graphs keep the default, as their forward may later feed a backward).
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
