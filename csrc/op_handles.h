// Typed handles to the ops, for C++ code that calls them through the dispatcher.
#pragma once

#include <ATen/TracerMode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>

#include <array>
#include <optional>
#include <tuple>

namespace rnnfast {

using ForwardSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
    const std::optional<at::Tensor>&, c10::string_view, bool, bool, bool);

using BackwardSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                     at::Tensor, at::Tensor, at::Tensor>(
    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
    const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
    const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&, c10::string_view, bool,
    bool, std::array<bool, 8>);

using LayersSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const c10::List<std::optional<at::Tensor>>&,
    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
    const std::optional<at::Tensor>&, c10::string_view, bool, bool, double);

inline const c10::TypedOperatorHandle<ForwardSignature>& forward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("rnnfast::recurrent_forward", "")
                             .typed<ForwardSignature>();
  return op;
}

inline const c10::TypedOperatorHandle<BackwardSignature>& backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("rnnfast::recurrent_backward", "")
                             .typed<BackwardSignature>();
  return op;
}

inline const c10::TypedOperatorHandle<LayersSignature>& layers_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("rnnfast::recurrent_layers", "")
                             .typed<LayersSignature>();
  return op;
}

using MmSignature = at::Tensor(const at::Tensor&, const at::Tensor&,
                               const std::optional<at::Tensor>&);

inline const c10::TypedOperatorHandle<MmSignature>& mm_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("rnnfast::mm", "").typed<MmSignature>();
  return op;
}

// need_saved for a forward called from C++ (a direct entry, a stack of layers): whether to keep
// what only a backward reads where the Autograd kernel records no graph (where it records one,
// it keeps it anyway). Under torch.jit.trace, false: the trace bakes the flag into its graph,
// whose check re-runs the call under no_grad, and a traced graph always runs through the
// Autograd kernel.
inline bool need_saved_without_graph() {
  return c10::GradMode::is_enabled() && !at::tracer::impl::is_dispatch_enabled();
}

}  // namespace rnnfast
