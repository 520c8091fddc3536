// The Python module rnnfast._C. Importing it runs the op registrations; it also offers a
// direct, typed entry to the forward op for eager calls, which skips the boxed argument
// parsing of torch.ops (about half the fixed cost of a small layer). The call still goes
// through the dispatcher, so autograd, autocast and dispatch modes apply as for torch.ops.
// Only the pip build compiles this file: the CMake library for libtorch users has no Python.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/extension.h>

namespace {

using at::Tensor;
using std::optional;

std::tuple<Tensor, Tensor, Tensor, Tensor> recurrent_forward(
    const Tensor& input, const Tensor& weight_ih, const Tensor& weight_hh,
    const optional<Tensor>& bias_ih, const optional<Tensor>& bias_hh,
    const optional<Tensor>& hx, const optional<Tensor>& cx, const optional<Tensor>& weight_hr,
    const optional<Tensor>& lengths, const std::string& cell, bool reverse, bool batch_first) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("rnnfast::recurrent_forward", "")
          .typed<std::tuple<Tensor, Tensor, Tensor, Tensor>(
              const Tensor&, const Tensor&, const Tensor&, const optional<Tensor>&,
              const optional<Tensor>&, const optional<Tensor>&, const optional<Tensor>&,
              const optional<Tensor>&, const optional<Tensor>&, c10::string_view, bool,
              bool)>();
  return op.call(input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx, weight_hr, lengths,
                 cell, reverse, batch_first);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.def("recurrent_forward", &recurrent_forward,
        "rnnfast::recurrent_forward, called directly (eager mode only)",
        pybind11::call_guard<pybind11::gil_scoped_release>());
}
