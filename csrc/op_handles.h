// Typed handles to the ops, for C++ code that calls them through the dispatcher.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

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

}  // namespace rnnfast
