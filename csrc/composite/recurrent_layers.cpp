// recurrent_layers: a stack of layers (torch.nn's num_layers, bidirectional and dropout) as one
// op whose kernel calls recurrent_forward for each layer and direction and joins their results.
// An eager rnnfast.RNN/GRU/LSTM makes this one call from Python instead of one per direction
// plus the Python tensor ops that join them, each about 1 us: a fifth of a small layer's
// time. CompositeImplicitAutograd: autograd, torch.compile, torch.export, torch.func and
// torch.jit.trace see the recurrent_forward calls and ATen ops it makes, so it needs no rules
// of its own.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "../checks.h"
#include "../lengths_on_device.h"
#include "../op_handles.h"

namespace rnnfast {
namespace {

using at::Tensor;
using std::optional;

// Per layer and direction: weight_ih, weight_hh, bias_ih, bias_hh, weight_hr.
constexpr int64_t kWeightsPerDirection = 5;

void check_states(const optional<Tensor>& state, const char* name, int64_t count) {
  if (!state.has_value()) return;
  TORCH_CHECK(state->dim() == 3, "rnnfast.recurrent_layers: ", name,
              " must be 3-D [num_layers * num_directions, B, features]; got ", state->dim(), "-D");
  TORCH_CHECK(state->sym_size(0) == count, "rnnfast.recurrent_layers: ", name, " must hold ", count,
              " states (num_layers * num_directions); got ", state->sym_size(0));
}

// One state per layer and direction, stacked: [L*D, B, X]. A single one needs no copy.
Tensor stack_states(const std::vector<Tensor>& states) {
  return states.size() == 1 ? states[0].unsqueeze(0) : at::stack(states);
}

// input [T, B, I] ([B, T, I] if batch_first); weights: kWeightsPerDirection per layer and
// direction, the reverse direction after the forward one; hx [L*D, B, P], cx [L*D, B, H] or
// None. Returns output [T, B, D*P] (or batch-first), h_n [L*D, B, P], c_n [L*D, B, H] (LSTM;
// for other cells [L*D, 0]).
std::tuple<Tensor, Tensor, Tensor> recurrent_layers(
    const Tensor& input, const c10::List<optional<Tensor>>& weights, const optional<Tensor>& hx,
    const optional<Tensor>& cx, const optional<Tensor>& lengths, c10::string_view cell,
    bool bidirectional, bool batch_first, double dropout) {
  const int64_t directions = bidirectional ? 2 : 1;
  const int64_t count = static_cast<int64_t>(weights.size());
  TORCH_CHECK(count > 0 && count % (kWeightsPerDirection * directions) == 0,
              "rnnfast.recurrent_layers: weights must hold ", kWeightsPerDirection,
              " entries (weight_ih, weight_hh, bias_ih, bias_hh, weight_hr) per layer and "
              "direction, a multiple of ",
              kWeightsPerDirection * directions, " for ", directions, " direction(s); got ", count);
  TORCH_CHECK(dropout >= 0 && dropout <= 1,
              "rnnfast.recurrent_layers: dropout must lie in [0, 1]; got ", dropout);
  const int64_t states = count / kWeightsPerDirection;
  check_states(hx, "hx", states);
  check_states(cx, "cx", states);
  // Once here, not in each layer's and direction's forward and backward (pad_packed_sequence's
  // lengths live on the CPU; a copy to the GPU waits for it).
  const optional<Tensor> step_lengths =
      lengths.has_value() ? optional<Tensor>(lengths_on_device(*lengths, input.device())) : lengths;
  std::vector<Tensor> h_n, c_n;
  h_n.reserve(states);
  c_n.reserve(states);
  Tensor layer_input = input, forward_output;
  for (int64_t k = 0; k < states; ++k) {
    const auto weight = [&](int64_t i) -> optional<Tensor> {
      return weights.get(k * kWeightsPerDirection + i);
    };
    const int64_t direction = k % directions;
    const optional<Tensor> weight_ih = weight(0), weight_hh = weight(1);
    TORCH_CHECK(weight_ih.has_value() && weight_hh.has_value(),
                "rnnfast.recurrent_layers: weight_ih and weight_hh of layer ", k / directions,
                ", direction ", direction, " (weights[", k * kWeightsPerDirection, "] and [",
                k * kWeightsPerDirection + 1, "]) must be tensors; got None");
    auto [output, h, c, saved] =
        forward_op().call(layer_input, *weight_ih, *weight_hh, weight(2), weight(3),
                          hx.has_value() ? optional<Tensor>(hx->select(0, k)) : std::nullopt,
                          cx.has_value() ? optional<Tensor>(cx->select(0, k)) : std::nullopt,
                          weight(4), step_lengths, cell, /*reverse=*/direction == 1, batch_first,
                          /*need_saved=*/need_saved_without_graph());
    h_n.push_back(std::move(h));
    c_n.push_back(std::move(c));
    if (direction + 1 < directions) {  // the forward half of a bidirectional layer
      forward_output = std::move(output);
      continue;
    }
    Tensor layer_output =
        directions == 1 ? std::move(output) : at::cat({forward_output, output}, -1);
    if (dropout > 0 && k + 1 < states) {  // between layers, not after the last
      layer_output = at::dropout(layer_output, dropout, /*train=*/true);
    }
    layer_input = std::move(layer_output);
  }
  return {layer_input, stack_states(h_n), stack_states(c_n)};
}

}  // namespace
}  // namespace rnnfast

TORCH_LIBRARY_IMPL(rnnfast, CompositeImplicitAutograd, m) {
  m.impl("recurrent_layers", &rnnfast::recurrent_layers);
}

// vmap: the same kernel, run on vmap's batched tensors, whose ops have batching rules of their
// own (recurrent_forward's in functorch_batched.cpp). The dispatcher does not decompose
// composite ops for vmap: without this, vmap of a layer module raised.
TORCH_LIBRARY_IMPL(rnnfast, FuncTorchBatched, m) {
  m.impl("recurrent_layers", &rnnfast::recurrent_layers);
}

// torch.jit.trace: the tracer records the recurrent_forward calls and ATen ops the kernel makes
// (it cannot record an op that takes a Tensor?[]: "unsupported input list type").
TORCH_LIBRARY_IMPL(rnnfast, Tracer, m) {
  m.impl("recurrent_layers", torch::CppFunction::makeFallthrough());
}
