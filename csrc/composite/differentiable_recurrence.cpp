#include "differentiable_recurrence.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <string>
#include <vector>

#include "../checks.h"

namespace rnnfast {
namespace {

using at::Tensor;
using std::optional;

// A value of the cells' math (cells.h) that is a whole step's units [B, H] as a tensor, or a
// constant (cells.h writes V(1)): so the cells run unchanged as ATen ops.
struct TensorValue {
  Tensor tensor;  // undefined for a constant
  double constant = 0;

  TensorValue() = default;
  TensorValue(double c) : constant(c) {}           // NOLINT: implicit, as V(0) and V(1) need
  TensorValue(Tensor t) : tensor(std::move(t)) {}  // NOLINT
};

template <class Op>
TensorValue binary(const TensorValue& a, const TensorValue& b, Op op) {
  if (a.tensor.defined() && b.tensor.defined()) return op(a.tensor, b.tensor);
  if (a.tensor.defined()) return op(a.tensor, at::Scalar(b.constant));
  if (b.tensor.defined()) return op(at::Scalar(a.constant), b.tensor);
  return op(a.constant, b.constant);
}

TensorValue operator+(const TensorValue& a, const TensorValue& b) {
  return binary(a, b, [](const auto& x, const auto& y) { return x + y; });
}
TensorValue operator-(const TensorValue& a, const TensorValue& b) {
  return binary(a, b, [](const auto& x, const auto& y) { return x - y; });
}
TensorValue operator*(const TensorValue& a, const TensorValue& b) {
  return binary(a, b, [](const auto& x, const auto& y) { return x * y; });
}

}  // namespace

template <>
struct Math<TensorValue> {
  // at::sigmoid: 1 / (1 + exp(-x)) differentiated by autograd gives inf / inf where exp(-x)
  // overflows.
  static TensorValue sigmoid(const TensorValue& x) { return at::sigmoid(x.tensor); }
  static TensorValue tanh(const TensorValue& x) { return at::tanh(x.tensor); }
  static TensorValue relu(const TensorValue& x) { return at::relu(x.tensor); }
};

namespace {

template <class Cell>
std::tuple<Tensor, Tensor, Tensor> recurrence(
    const Tensor& input, const Tensor& weight_ih, const Tensor& weight_hh,
    const optional<Tensor>& bias_ih, const optional<Tensor>& bias_hh, const optional<Tensor>& hx,
    const optional<Tensor>& cx, const optional<Tensor>& weight_hr, const optional<Tensor>& lengths,
    bool reverse, bool batch_first) {
  constexpr int G = Cell::kGates;
  const auto storage_type = input.scalar_type();
  const auto compute_type = at::toOpMathType(storage_type);
  const auto compute = [&](const Tensor& t) { return t.to(compute_type); };

  const Tensor x = compute(batch_first ? input.transpose(0, 1) : input);  // [T, B, I]
  const int64_t T = x.size(0), B = x.size(1), H = weight_ih.size(0) / G;
  const int64_t P = weight_hh.size(1);
  const optional<Tensor> w_hr =
      weight_hr.has_value() ? optional<Tensor>(compute(*weight_hr)) : std::nullopt;
  // The reset-before GRU forms the n part of the recurrent product from r * h, later. The
  // parts are sliced once, outside the loop: autograd gives each slice's gradient a buffer of
  // the whole weight.
  const int64_t h_columns = Cell::kResetBefore ? 2 * H : G * H;
  const Tensor w_hh = compute(weight_hh);  // [G*H, P]
  const Tensor w_hh_t = w_hh.narrow(0, 0, h_columns).t();
  const Tensor w_hn_t = Cell::kResetBefore ? w_hh.narrow(0, 2 * H, H).t() : Tensor();
  Tensor b_hh, b_hn;
  if (bias_hh.has_value()) {
    b_hh = compute(*bias_hh).narrow(0, 0, h_columns);
    if (Cell::kResetBefore) b_hn = compute(*bias_hh).narrow(0, 2 * H, H);
  }

  // x W^T + b, as one node where there is a bias (as torch.nn's linear).
  const auto linear = [](const Tensor& x, const Tensor& w_t, const Tensor& b) {
    return b.defined() ? at::addmm(b, x, w_t) : at::mm(x, w_t);
  };
  const Tensor gates_x =  // [T, B, G*H]
      linear(x.reshape({T * B, x.size(2)}), compute(weight_ih).t(),
             bias_ih.has_value() ? compute(*bias_ih) : Tensor())
          .view({T, B, G * H});
  Tensor h = hx.has_value() ? compute(*hx) : at::zeros({B, P}, x.options());
  Tensor c;
  if constexpr (Cell::kHasCellState) {
    c = cx.has_value() ? compute(*cx) : at::zeros({B, H}, x.options());
  }
  const Tensor lens = lengths.has_value() ? lengths->to(x.device(), at::kLong) : Tensor();

  // One view per step; the backward of unbind stacks their gradients once, where indexing
  // would give every step's gradient a zero-filled tensor of the whole sequence.
  const std::vector<Tensor> gates_x_steps = gates_x.unbind(0);
  std::vector<Tensor> outputs(T);
  for (int64_t k = 0; k < T; ++k) {
    const int64_t t = reverse ? T - 1 - k : k;
    const Tensor gates_h = linear(h, w_hh_t, b_hh);  // [B, h_columns]
    const std::vector<Tensor> gx = gates_x_steps[t].split(H, 1);
    const std::vector<Tensor> gh = gates_h.split(H, 1);
    TensorValue vgx[G], vgh[G], saved[Cell::kSaved > 0 ? Cell::kSaved : 1];
    for (int g = 0; g < G; ++g) vgx[g] = gx[g];
    for (int g = 0; g < h_columns / H; ++g) vgh[g] = gh[g];
    if constexpr (Cell::kResetBefore) {
      const Tensor reset_h = Cell::reset_forward(vgx[0], vgh[0], TensorValue(h)).tensor;
      vgh[2] = linear(reset_h, w_hn_t, b_hn);
    }
    TensorValue h_out, c_out;
    Cell::forward(vgx, vgh, TensorValue(h), TensorValue(c), h_out, c_out, saved);
    Tensor h_next = w_hr.has_value() ? at::mm(h_out.tensor, w_hr->t()) : h_out.tensor;
    if (lens.defined()) {
      // Past its end a sequence keeps its state and outputs zeros.
      const Tensor active = (lens > t).unsqueeze(1);  // [B, 1]
      outputs[t] = h_next.masked_fill(active.logical_not(), 0);
      h_next = at::where(active, h_next, h);
      if constexpr (Cell::kHasCellState) c_out = at::where(active, c_out.tensor, c);
    } else {
      outputs[t] = h_next;
    }
    h = h_next;
    if constexpr (Cell::kHasCellState) c = c_out.tensor;
  }
  Tensor output = at::stack(outputs);  // [T, B, P]
  if (batch_first) output = output.transpose(0, 1);
  return {output.to(storage_type), h.to(storage_type),
          Cell::kHasCellState ? c.to(storage_type) : Tensor()};
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> differentiable_recurrence(
    const Tensor& input, const Tensor& weight_ih, const Tensor& weight_hh,
    const optional<Tensor>& bias_ih, const optional<Tensor>& bias_hh, const optional<Tensor>& hx,
    const optional<Tensor>& cx, const optional<Tensor>& weight_hr, const optional<Tensor>& lengths,
    CellKind kind, bool reverse, bool batch_first) {
  return dispatch_cell(kind, [&](auto cell) {
    return recurrence<decltype(cell)>(input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx,
                                      weight_hr, lengths, reverse, batch_first);
  });
}

std::tuple<Tensor, Tensor, Tensor, Tensor> forward_as_ops(
    const Tensor& input, const Tensor& weight_ih, const Tensor& weight_hh,
    const optional<Tensor>& bias_ih, const optional<Tensor>& bias_hh, const optional<Tensor>& hx,
    const optional<Tensor>& cx, const optional<Tensor>& weight_hr, const optional<Tensor>& lengths,
    c10::string_view cell, bool reverse, bool batch_first) {
  const LayerSizes sizes = check_forward_args(input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx,
                                              weight_hr, lengths, std::string(cell), batch_first);
  auto [output, h_n, c_n] =
      differentiable_recurrence(input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx, weight_hr,
                                lengths, sizes.kind, reverse, batch_first);
  // Two distinct empty tensors: outputs of an op must not alias each other.
  const auto empty = [&] { return at::empty({0}, output.options()); };
  return {output, h_n, c_n.defined() ? c_n : empty(), empty()};
}

}  // namespace rnnfast
