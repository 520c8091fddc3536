#include "differentiable_scan.h"

#include <ATen/core/ivalue.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/basic_ops.h>

#include <atomic>
#include <memory>

#include "program_registry.h"
#include "scan_ops.h"

namespace rnnfast::scan {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::atomic<int64_t> backward_runs{0};

// What the node keeps besides its saved tensors: the call, the tensor counts, and the two
// programs' engines, which keep their handles valid until the backward has run even if the
// traced step is dropped from rnnfast.scan's cache meanwhile (program_registry.h).
struct CallHolder : torch::CustomClassHolder {
  DifferentiableScan call;
  std::shared_ptr<const ScanEngine> forward, backward;
  size_t carry = 0, seqs = 0, weights = 0, backward_weights = 0, kept = 0;
};

template <class T>
std::vector<T> slice(const std::vector<T>& v, size_t begin, size_t count) {
  return {v.begin() + begin, v.begin() + begin + count};
}

// DifferentiableScan::weight_views, read: per program weight, the given weight it views and
// the offset of its view ops in `codes`.
struct WeightViews {
  const std::vector<int64_t>& codes;
  std::vector<std::pair<int64_t, size_t>> views;  // (given weight, first op) per program weight

  explicit WeightViews(const std::vector<int64_t>& codes) : codes(codes) {
    for (size_t at = 0; at < codes.size();) {
      TORCH_CHECK(at + 2 <= codes.size() && at + 2 + 4 * codes[at + 1] <= codes.size(),
                  "rnnfast.scan: malformed weight views");
      views.emplace_back(codes[at], at);
      at += 2 + 4 * codes[at + 1];
    }
  }

  // Program weight k's view of `base` (the given weight, or its gradient's buffer).
  at::Tensor view(size_t k, at::Tensor base) const {
    const size_t at = views[k].second;
    for (int64_t op = 0; op < codes[at + 1]; ++op) {
      const int64_t* c = &codes[at + 2 + 4 * op];
      base = c[0] == 1 ? base.t() : base.slice(c[1], c[2], c[3]);
    }
    return base;
  }
};

// The given weights' gradients from the program weights' (grads): each added into its view
// of a zero buffer of its given weight's shape, or taken as it is where that weight has no
// other use and no view.
variable_list given_gradients(const DifferentiableScan& call, at::TensorList weights,
                              std::vector<at::Tensor> grads) {
  if (!call.weight_views.has_value()) return grads;
  const WeightViews views(*call.weight_views);
  std::vector<int> uses(weights.size(), 0);
  for (const auto& v : views.views) ++uses.at(v.first);
  variable_list out(weights.size());
  for (size_t k = 0; k < views.views.size(); ++k) {
    const auto [given, at] = views.views[k];
    at::Tensor& g = out[given];
    if (uses[given] == 1 && views.codes[at + 1] == 0) {
      g = std::move(grads[k]);
      continue;
    }
    if (!g.defined()) g = at::zeros_like(weights[given], at::MemoryFormat::Contiguous);
    views.view(k, g).add_(grads[k]);
  }
  return out;
}

struct ScanFunction : torch::autograd::Function<ScanFunction> {
  static variable_list forward(AutogradContext* ctx, const c10::intrusive_ptr<CallHolder>& held,
                               at::TensorList carry, at::TensorList seqs, at::TensorList weights,
                               at::TensorList backward_weights) {
    const DifferentiableScan& call = held->call;
    auto [final_carry, boundary, states, unused] = scan_run_op().call(
        call.program, carry, seqs, program_weights(call.weight_views, weights), call.mask,
        c10::SymInt(call.steps), call.reverse, /*keep_states=*/true, /*gradient=*/false);
    TORCH_CHECK(static_cast<int64_t>(boundary.size()) >= call.boundary,
                "rnnfast.scan: the forward program gave ", boundary.size(),
                " boundary values; expected at least ", call.boundary);
    held->carry = carry.size();
    held->seqs = seqs.size();
    held->weights = weights.size();
    held->backward_weights = backward_weights.size();
    held->kept = boundary.size() - call.boundary;
    variable_list saved = states;
    saved.insert(saved.end(), seqs.begin(), seqs.end());
    saved.insert(saved.end(), weights.begin(), weights.end());
    saved.insert(saved.end(), backward_weights.begin(), backward_weights.end());
    saved.insert(saved.end(), boundary.begin() + call.boundary, boundary.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["call"] = c10::IValue::make_capsule(held);
    variable_list out = std::move(final_carry);
    out.insert(out.end(), boundary.begin(), boundary.begin() + call.boundary);
    return out;
  }

  // grads: of the final carry, then of the boundary values (zeros where none came).
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto held =
        c10::static_intrusive_pointer_cast<CallHolder>(ctx->saved_data.at("call").toCapsule());
    const DifferentiableScan& call = held->call;
    const variable_list saved = ctx->get_saved_variables();
    size_t at = 0;
    const auto next = [&](size_t count) {
      at += count;
      return slice(saved, at - count, count);
    };
    const variable_list states = next(held->carry), seqs = next(held->seqs);
    const variable_list weights = next(held->weights);
    variable_list backward_weights = next(held->backward_weights);
    const variable_list kept = next(held->kept);
    if (call.backward_weight_sources.has_value()) {
      const std::vector<at::Tensor> forward_weights = program_weights(call.weight_views, weights);
      for (int64_t source : *call.backward_weight_sources) {
        const at::Tensor& w = forward_weights.at(source / 2);
        backward_weights.push_back(source % 2 != 0 ? w.t() : w);
      }
    }
    const at::ScalarType dtype = states.at(0).scalar_type();
    variable_list g_carry, per_step = states;
    for (size_t k = 0; k < grads.size(); ++k) {
      at::Tensor g = grads[k].scalar_type() == dtype ? grads[k] : grads[k].to(dtype);
      (k < held->carry ? g_carry : per_step).push_back(std::move(g));
    }
    // per_step: the primal carries and sequences, the boundary cotangents, the kept products.
    per_step.insert(per_step.begin() + held->carry, seqs.begin(), seqs.end());
    per_step.insert(per_step.end(), kept.begin(), kept.end());
    std::vector<at::Tensor> g_first, g_seqs, g_weights;
    {
      const at::AutoGradMode no_grad(false);  // the engine's gradients are not differentiable
      auto result = scan_run_op().call(call.backward_program, g_carry, per_step, backward_weights,
                                       call.mask, c10::SymInt(call.steps), !call.reverse,
                                       /*keep_states=*/false, /*gradient=*/true);
      g_first = std::move(std::get<0>(result));
      g_seqs = std::move(std::get<1>(result));
      g_weights = std::move(std::get<3>(result));
    }
    backward_runs.fetch_add(1, std::memory_order_relaxed);
    const size_t program_weight_count = call.weight_views.has_value()
                                            ? WeightViews(*call.weight_views).views.size()
                                            : held->weights;
    TORCH_CHECK(g_first.size() == held->carry && g_seqs.size() == held->seqs &&
                    g_weights.size() == program_weight_count,
                "rnnfast.scan: the backward program gave ", g_first.size(), ", ", g_seqs.size(),
                " and ", g_weights.size(), " gradients; expected ", held->carry, ", ", held->seqs,
                " and ", program_weight_count);
    g_weights = given_gradients(call, weights, std::move(g_weights));
    variable_list out{at::Tensor()};  // the call holder's slot
    out.insert(out.end(), g_first.begin(), g_first.end());
    out.insert(out.end(), g_seqs.begin(), g_seqs.end());
    out.insert(out.end(), g_weights.begin(), g_weights.end());
    out.resize(out.size() + held->backward_weights);  // read by the backward, not differentiated
    return not_differentiable_again(std::move(out));
  }

  // Where the backward records a graph (create_graph=True), the results differentiate to an
  // error rather than to nothing: the engine's gradients are not a graph of the loop. (Unlike
  // torch's once_differentiable, also where the upstream gradients do not require grad: the
  // results still depend on the weights.)
  static variable_list not_differentiable_again(variable_list out) {
    if (!at::GradMode::is_enabled()) return out;
    for (at::Tensor& t : out) {
      if (t.defined()) t = t.detach().requires_grad_(true);
    }
    return torch::autograd::DelayedError(
               "rnnfast.scan's backward cannot be differentiated again (it is not recorded "
               "as a graph)",
               static_cast<int64_t>(out.size()))
        .apply(std::move(out));
  }
};

}  // namespace

std::vector<at::Tensor> program_weights(const std::optional<std::vector<int64_t>>& weight_views,
                                        at::TensorList weights) {
  if (!weight_views.has_value()) return weights.vec();
  const WeightViews views(*weight_views);
  std::vector<at::Tensor> out;
  out.reserve(views.views.size());
  for (size_t k = 0; k < views.views.size(); ++k) {
    out.push_back(views.view(k, weights.at(views.views[k].first)));
  }
  return out;
}

std::vector<at::Tensor> run_differentiable(const DifferentiableScan& call, at::TensorList carry,
                                           at::TensorList seqs, at::TensorList weights,
                                           at::TensorList backward_weights) {
  auto held = c10::make_intrusive<CallHolder>();
  held->call = call;
  held->forward = registered_engine(call.program);
  held->backward = registered_engine(call.backward_program);
  return ScanFunction::apply(held, carry, seqs, weights, backward_weights);
}

int64_t differentiable_backward_runs() { return backward_runs.load(std::memory_order_relaxed); }

}  // namespace rnnfast::scan
