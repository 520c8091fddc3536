// The layer is recomputed as ATen ops (differentiable_recurrence.h) on detached copies of its
// arguments, and autograd differentiates that with create_graph=True. The copies cut the
// recomputed graph off from the graph that produced the arguments: without them, a weight
// that also reaches the layer through an argument (a cell's weights through its previous
// state, in a loop) would get the gradient of the earlier steps a second time. Reattached
// then makes the gradients functions of the arguments themselves, so that a further backward
// reaches them.
#include "differentiable_backward.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <optional>
#include <utility>
#include <vector>

#include "differentiable_recurrence.h"

namespace rnnfast {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Values and the detached copies (leaves) whose graph they were computed on.
using Graph = std::pair<variable_list, variable_list>;

Tensor leaf_copy(const Tensor& t) {
  return t.defined() ? t.detach().requires_grad_(true) : Tensor();
}

std::optional<Tensor> present(const Tensor& t) {
  return t.defined() ? std::optional<Tensor>(t) : std::nullopt;
}

// d(values)/d(copies) against `grads`, zeros where a copy does not reach the values.
variable_list gradients(const variable_list& values, const variable_list& grads,
                        const variable_list& copies, bool create_graph) {
  variable_list used_values, used_grads;
  for (size_t k = 0; k < values.size(); ++k) {
    if (values[k].defined() && grads[k].defined()) {
      used_values.push_back(values[k]);
      used_grads.push_back(grads[k]);
    }
  }
  variable_list result(copies.size());
  if (!used_values.empty()) {
    result = torch::autograd::grad(used_values, copies, used_grads, /*retain_graph=*/true,
                                   create_graph, /*allow_unused=*/true);
  }
  for (size_t k = 0; k < copies.size(); ++k) {
    if (!result[k].defined()) result[k] = at::zeros_like(copies[k]);
  }
  return result;
}

// The gradients of `values`, computed over `copies` of `originals`, against `grads` and with
// respect to `targets` (some of the copies), as functions of the originals and of `grads`.
variable_list reattached_gradients(const variable_list& values, const variable_list& grads,
                                   const variable_list& targets, variable_list originals,
                                   variable_list copies);

// Values computed over copies of `originals`, as functions of the originals: forward gives the
// values, backward differentiates their graph over the copies and passes the result on to the
// originals (through a Reattached of its own where it records a graph, for the next order).
class Reattached : public torch::autograd::Function<Reattached> {
 public:
  // `originals` as a TensorList: the form in which a Function's tensor arguments may come
  // in a list.
  static variable_list forward(AutogradContext* ctx, at::TensorList originals, const Graph& graph) {
    ctx->save_for_backward(originals.vec());
    ctx->saved_data["values"] = graph.first;
    ctx->saved_data["copies"] = graph.second;
    ctx->set_materialize_grads(false);
    variable_list out;
    for (const Tensor& v : graph.first) out.push_back(v.detach().clone());
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list originals = ctx->get_saved_variables();
    const variable_list values = ctx->saved_data["values"].toTensorVector();
    const variable_list copies = ctx->saved_data["copies"].toTensorVector();
    variable_list out;
    if (!at::GradMode::is_enabled()) {
      out = gradients(values, grads, copies, /*create_graph=*/false);
    } else {
      out = reattached_gradients(values, grads, copies, originals, copies);
    }
    out.resize(originals.size());
    out.emplace_back();  // the graph argument
    return out;
  }
};

variable_list reattached_gradients(const variable_list& values, const variable_list& grads,
                                   const variable_list& targets, variable_list originals,
                                   variable_list copies) {
  variable_list grad_copies;
  for (const Tensor& g : grads) {
    grad_copies.push_back(leaf_copy(g));
    if (g.defined()) {
      originals.push_back(g);
      copies.push_back(grad_copies.back());
    }
  }
  return Reattached::apply(
      at::TensorList(originals),
      Graph{gradients(values, grad_copies, targets, /*create_graph=*/true), copies});
}

}  // namespace

std::array<Tensor, 8> differentiable_backward(const std::array<Tensor, 8>& arguments,
                                              const Tensor& lengths, CellKind kind, bool reverse,
                                              bool batch_first, const std::array<bool, 8>& wanted,
                                              const std::array<Tensor, 3>& grads) {
  // Every argument that requires grad gets a copy, wanted or not: the gradients of the wanted
  // ones depend on the others too, and a second backward must reach them.
  std::array<Tensor, 8> copies;
  variable_list originals, all_copies, wanted_copies;
  for (size_t k = 0; k < arguments.size(); ++k) {
    const Tensor& a = arguments[k];
    if (a.defined() && (wanted[k] || a.requires_grad())) {
      copies[k] = leaf_copy(a);
      originals.push_back(a);
      all_copies.push_back(copies[k]);
    } else {
      copies[k] = a.defined() ? a.detach() : Tensor();
    }
    if (wanted[k]) wanted_copies.push_back(copies[k]);
  }
  std::array<Tensor, 8> result;
  if (wanted_copies.empty()) return result;
  const auto [output, h_n, c_n] = differentiable_recurrence(
      copies[0], copies[1], copies[2], present(copies[3]), present(copies[4]), present(copies[5]),
      present(copies[6]), present(copies[7]), present(lengths), kind, reverse, batch_first);
  const variable_list reattached = reattached_gradients(
      {output, h_n, c_n}, {grads.begin(), grads.end()}, wanted_copies, originals, all_copies);
  for (size_t k = 0, next = 0; k < arguments.size(); ++k) {
    if (wanted[k]) result[k] = reattached[next++];
  }
  return result;
}

}  // namespace rnnfast
