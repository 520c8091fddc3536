// The CUDA recurrence engine: one layer in one direction, for every cell of cells.h, written
// against a Device that supplies the GEMMs and the pointwise passes:
//   recurrence_cuda.cpp: cuBLAS and the kernels of recurrence_kernels.cu, on the current stream;
//   on_host/: ATen GEMMs and the same element code (step_elements.h) run in plain loops
//   on the CPU, so the tests check this step loop and those kernels' bodies without a GPU.
//
// Forward: the input projection of all steps as one GEMM; per step the recurrent GEMM and one
// fused pointwise pass. Backward: the reverse loop (pointwise pass, then the recurrent GEMMs
// that carry dh back a step), then the weight gradients as GEMMs over all steps. Everything
// is allocated before the step loop and nothing in it synchronises with the host, so on the
// GPU a whole layer can be captured in a CUDA graph (its lengths, if any, on the device: a
// copy from the host cannot be captured, and lengths_on_device says so).
//
// Semantics, what `saved` holds and the handling of lengths, padding, reverse, batch_first,
// hx/cx and weight_hr follow the CPU engine (cpu/recurrence_cpu.cpp) exactly.
//
// Lengths: CPU lengths are validated by checks.cpp and copied to the device as they are at
// the call (lengths_on_device.h); lengths already on the device are used without a host sync,
// clamped to [0, T] (so an out-of-range length acts as 0 or T; it can never address memory
// outside the tensors).
//
// A Device has:
//   Guard, constructible from the input's at::Device (a device guard, or nothing);
//   gemm(ab_type, c_type, M, N, K, alpha, Operand a, Operand b, beta, c, ldc): row-major
//     c [M, N] = alpha * op(a) op(b) + beta * c, as cuda::Blas::gemm;
//   forward_step, reset_forward, store_projection, projection_grad, backward_step,
//     reset_backward: one pass of step t, arguments as the launchers of
//     recurrence_kernels.h (less the stream); they throw on failure.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

#include "../cell_registry.h"
#include "../checks.h"
#include "../empty_batch.h"
#include "../lengths_on_device.h"
#include "gemm_operand.h"
#include "step_args.h"

namespace rnnfast::cuda {

using at::Tensor;
using std::optional;

inline ElementType element_type(const Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return ElementType::Float;
    case at::kDouble:
      return ElementType::Double;
    case at::kHalf:
      return ElementType::Half;
    case at::kBFloat16:
      return ElementType::BFloat16;
    default:
      TORCH_CHECK_TYPE(false, "rnnfast: input must be float32, float64, float16 or bfloat16; got ",
                       t.scalar_type());
  }
}

// The compute type of the GEMM results and running sums.
inline at::ScalarType acc_type(const Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline void* data_or_null(Tensor& t) {
  return t.defined() && t.numel() > 0 ? t.data_ptr() : nullptr;
}
inline const void* data_or_null(const Tensor& t) {
  return t.defined() && t.numel() > 0 ? t.const_data_ptr() : nullptr;
}

// One layer in one direction on a Device (see the top of this file).
template <class Device>
class DeviceRecurrence {
 public:
  DeviceRecurrence(const LayerSizes& sizes, bool reverse, bool batch_first, const Tensor& input,
                   const Tensor& weight_hh, const optional<Tensor>& weight_hr,
                   const optional<Tensor>& lengths)
      : s_(sizes),
        cell_(cell_spec(sizes.kind)),
        GH_(cell_.gates * sizes.H),
        batch_first_(batch_first),
        type_(input.scalar_type()),
        element_(element_type(input)),
        acc_(acc_type(input)),
        weight_hh_(weight_hh.contiguous()),
        projection_(weight_hr.has_value()) {
    if (projection_) weight_hr_ = weight_hr->contiguous();
    if (lengths.has_value()) {
      lengths_ =
          lengths_on_device(*lengths, input.device()).to(at::kLong).clamp(0, sizes.T).contiguous();
    }
    geo_ = StepGeometry{s_.T,
                        s_.B,
                        s_.H,
                        s_.P,
                        batch_first,
                        reverse,
                        lengths_.defined() ? lengths_.const_data_ptr<int64_t>() : nullptr};
  }

  // input [N, I] in the caller's layout, weight_ih [G*H, I], biases [G*H]; h0 [B, P],
  // c0 [B, H]. Returns output [N, P], h_n [B, P], c_n [B, H] (or empty), saved [N, S*H] (or
  // empty, and then not written, when need_saved is false).
  std::tuple<Tensor, Tensor, Tensor, Tensor> forward(const Tensor& input, const Tensor& weight_ih,
                                                     const optional<Tensor>& bias_ih,
                                                     const optional<Tensor>& bias_hh,
                                                     const optional<Tensor>& hx,
                                                     const optional<Tensor>& cx, bool need_saved) {
    const int64_t T = s_.T, B = s_.B, H = s_.H, P = s_.P, I = s_.I, N = T * B;
    const int64_t S = cell_.saved;
    const auto opts = input.options();
    const auto acc_opts = opts.dtype(acc_);
    const Tensor x = input.contiguous();
    const Tensor w_ih = weight_ih.contiguous();
    Tensor output = at::empty(sequence_shape(s_, P, batch_first_), opts);
    Tensor h_n = hx.has_value() ? hx->clone(at::MemoryFormat::Contiguous) : at::zeros({B, P}, opts);
    Tensor c_state;
    if (cell_.has_cell_state) {
      c_state = cx.has_value() ? cx->to(acc_opts, /*non_blocking=*/false, /*copy=*/true,
                                        at::MemoryFormat::Contiguous)
                               : at::zeros({B, H}, acc_opts);
    }
    Tensor saved = (S > 0 && need_saved) ? at::empty(sequence_shape(s_, S * H, batch_first_), opts)
                                         : at::empty({0}, opts);
    Tensor gx = at::empty({N, GH_}, acc_opts);  // rows in the caller's layout, like x
    Tensor gh = at::empty({B, GH_}, acc_opts);
    Tensor projected = at::empty({projection_ ? B : 0, P}, acc_opts);
    // r * h for the reset-before GRU, or the unprojected LSTM output: [B, H].
    Tensor step_operand = at::empty({(cell_.reset_before || projection_) ? B : 0, H}, opts);
    const auto [input_bias, recurrent_bias] = split_biases(bias_ih, bias_hh, acc_opts);

    // gx = x W_ih^T for all steps at once.
    device_.gemm(type_, acc_, N, GH_, I, 1.0, rows(x.const_data_ptr(), I),
                 transposed(w_ih.const_data_ptr(), I), 0.0, gx.data_ptr(), GH_);

    ForwardStep args{};
    args.gx = gx.const_data_ptr();
    args.gh = gh.const_data_ptr();
    args.input_bias = data_or_null(input_bias);
    args.recurrent_bias = data_or_null(recurrent_bias);
    args.h = h_n.data_ptr();
    args.c = cell_.has_cell_state ? c_state.data_ptr() : nullptr;
    args.output = output.data_ptr();
    args.saved = data_or_null(saved);
    args.unprojected = projection_ ? step_operand.data_ptr() : nullptr;
    // The n part of the reset-before GRU's recurrent product waits for r * h.
    const int64_t gh_cols = cell_.reset_before ? 2 * H : GH_;

    for (int64_t step = 0; step < T; ++step) {
      const int64_t t = geo_.reverse ? T - 1 - step : step;
      // gh = h W_hh^T
      device_.gemm(type_, acc_, B, gh_cols, P, 1.0, rows(h_n.const_data_ptr(), P),
                   transposed(weight_hh_.const_data_ptr(), P), 0.0, gh.data_ptr(), GH_);
      if (cell_.reset_before) {
        device_.reset_forward(s_.kind, element_, geo_, t, args, step_operand.data_ptr());
        // gh[:, 2H:3H] = (r * h) W_hn^T
        device_.gemm(type_, acc_, B, H, H, 1.0, rows(step_operand.const_data_ptr(), H),
                     transposed(element_at(weight_hh_, 2 * H * P), P), 0.0, element_at(gh, 2 * H),
                     GH_);
      }
      device_.forward_step(s_.kind, element_, geo_, t, args);
      if (projection_) {
        // projected = (o * tanh(c')) W_hr^T, then into h and output for the active rows.
        device_.gemm(type_, acc_, B, P, H, 1.0, rows(step_operand.const_data_ptr(), H),
                     transposed(weight_hr_.const_data_ptr(), H), 0.0, projected.data_ptr(), P);
        device_.store_projection(element_, geo_, t, projected.const_data_ptr(), h_n.data_ptr(),
                                 output.data_ptr());
      }
    }
    Tensor c_n = cell_.has_cell_state ? c_state.to(type_) : at::empty({0}, opts);
    return {output, h_n, c_n, saved};
  }

  // Gradients of (input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx, weight_hr); those
  // not asked for in `mask` come back empty.
  std::array<Tensor, 8> backward(const optional<Tensor>& grad_output,
                                 const optional<Tensor>& grad_h_n, const optional<Tensor>& grad_c_n,
                                 const Tensor& input, const Tensor& weight_ih,
                                 const optional<Tensor>& hx, const Tensor& output,
                                 const Tensor& saved, std::array<bool, 8> mask) {
    BackwardBuffers buf = backward_buffers(grad_output, grad_h_n, grad_c_n, hx, output, saved);
    reverse_loop(buf);
    return gradients(buf, input, weight_ih, mask);
  }

 private:
  // What the reverse loop reads and writes, then the weight gradients read. N = T * B rows in
  // the caller's layout; empty where the cell or the projection has no use for a buffer.
  struct BackwardBuffers {
    Tensor g_out, out, saved, h0;     // [N, P], [N, P], [N, S*H], [B, P]
    Tensor d_gates_x;                 // [N, G*H]
    Tensor d_gates_h;                 // [N, (G - recurrent_bias_from) * H]
    Tensor d_recurrent;               // [B, G*H]
    Tensor h_prevs;                   // [N, P]
    Tensor reset_h;                   // [N, H]: r * h_prev of the reset-before GRU
    Tensor unprojected, d_projected;  // [N, H], [N, P]
    Tensor dh_state, dc_state;        // [B, P], [B, H] in the compute type
    Tensor d_step_operand;            // [B, H]: d(unprojected output) or d(r * h)
  };

  // The recurrent-side gradients keep their own columns from this many: (G - from) * H.
  int64_t recurrent_gradient_width() const {
    return (cell_.gates - cell_.recurrent_bias_from) * s_.H;
  }

  // Rows of W_hh whose share of dh_prev comes from d_gates_x (the reset-before GRU's n rows
  // act on r * h and are handled through d(r * h)).
  int64_t input_side_rows() const {
    return cell_.reset_before ? 2 * s_.H : cell_.recurrent_bias_from * s_.H;
  }

  BackwardBuffers backward_buffers(const optional<Tensor>& grad_output,
                                   const optional<Tensor>& grad_h_n,
                                   const optional<Tensor>& grad_c_n, const optional<Tensor>& hx,
                                   const Tensor& output, const Tensor& saved) const {
    const int64_t B = s_.B, H = s_.H, P = s_.P, N = s_.T * B;
    const int64_t SH = recurrent_gradient_width();
    const auto opts = output.options();
    const auto acc_opts = opts.dtype(acc_);
    const auto acc_copy = [&](const Tensor& t) {
      return t.to(acc_opts, /*non_blocking=*/false, /*copy=*/true, at::MemoryFormat::Contiguous);
    };
    BackwardBuffers buf;
    buf.g_out = grad_output.has_value() ? grad_output->contiguous() : Tensor();
    buf.out = output.contiguous();
    buf.saved = saved.contiguous();
    buf.h0 = hx.has_value() ? hx->contiguous() : at::zeros({B, P}, opts);
    buf.d_gates_x = at::empty({N, GH_}, opts);
    buf.d_gates_h = at::empty({SH > 0 ? N : 0, SH}, opts);
    buf.d_recurrent = at::empty({SH > 0 ? B : 0, GH_}, opts);
    buf.h_prevs = at::empty({N, P}, opts);
    buf.reset_h = at::empty({cell_.reset_before ? N : 0, H}, opts);
    buf.unprojected = at::empty({projection_ ? N : 0, H}, opts);
    buf.d_projected = at::empty({projection_ ? N : 0, P}, opts);
    buf.dh_state = grad_h_n.has_value() ? acc_copy(*grad_h_n) : at::zeros({B, P}, acc_opts);
    buf.dc_state = cell_.has_cell_state && grad_c_n.has_value()
                       ? acc_copy(*grad_c_n)
                       : at::zeros({cell_.has_cell_state ? B : 0, H}, acc_opts);
    buf.d_step_operand = at::empty({(cell_.reset_before || projection_) ? B : 0, H}, acc_opts);
    return buf;
  }

  // The steps from last to first: each step's gate gradients, and dh carried to the step before.
  void reverse_loop(BackwardBuffers& buf) {
    const int64_t T = s_.T, B = s_.B, H = s_.H, P = s_.P;
    const int64_t SH = recurrent_gradient_width(), x_rows = input_side_rows();
    BackwardStep args{};
    args.grad_output = data_or_null(buf.g_out);
    args.output = buf.out.const_data_ptr();
    args.saved = cell_.saved > 0 ? buf.saved.const_data_ptr() : nullptr;
    args.h0 = buf.h0.const_data_ptr();
    args.d_unprojected = projection_ ? buf.d_step_operand.const_data_ptr() : nullptr;
    args.dh = buf.dh_state.data_ptr();
    args.dc = data_or_null(buf.dc_state);
    args.d_gates_x = buf.d_gates_x.data_ptr();
    args.d_gates_h = data_or_null(buf.d_gates_h);
    args.d_recurrent = data_or_null(buf.d_recurrent);
    args.h_prev = buf.h_prevs.data_ptr();
    args.unprojected = data_or_null(buf.unprojected);
    args.reset_h = data_or_null(buf.reset_h);

    // Between the rows of batch entries b and b + 1 at one step: the GEMMs' row stride factor.
    const int64_t batch_ld = batch_first_ ? T : 1;
    for (int64_t step = T - 1; step >= 0; --step) {
      const int64_t t = geo_.reverse ? T - 1 - step : step;
      const int64_t row0 = batch_first_ ? t : t * B;  // row (t, 0)
      if (projection_) {
        device_.projection_grad(element_, geo_, t, data_or_null(buf.g_out), buf.dh_state.data_ptr(),
                                buf.d_projected.data_ptr());
        // d(unprojected) = dh W_hr
        device_.gemm(type_, acc_, B, H, P, 1.0,
                     rows(element_at(buf.d_projected, row0 * P), batch_ld * P),
                     rows(weight_hr_.const_data_ptr(), H), 0.0, buf.d_step_operand.data_ptr(), H);
      }
      device_.backward_step(s_.kind, element_, geo_, t, args);
      if (cell_.reset_before) {
        // d(r * h_prev) = dn_pre W_hn; then r's gradient and r's share of dh_prev.
        device_.gemm(type_, acc_, B, H, H, 1.0,
                     rows(element_at(buf.d_gates_x, row0 * GH_ + 2 * H), batch_ld * GH_),
                     rows(element_at(weight_hh_, 2 * H * P), P), 0.0, buf.d_step_operand.data_ptr(),
                     H);
        device_.reset_backward(s_.kind, element_, geo_, t, args,
                               buf.d_step_operand.const_data_ptr());
      }
      // dh_prev += dG W_hh. Where gates keep their recurrent side apart (the reset-after
      // GRU's n), from this step's d_recurrent: one GEMM instead of one per side.
      if (SH > 0) {
        device_.gemm(type_, acc_, B, P, GH_, 1.0, rows(buf.d_recurrent.const_data_ptr(), GH_),
                     rows(weight_hh_.const_data_ptr(), P), 1.0, buf.dh_state.data_ptr(), P);
      } else {
        device_.gemm(type_, acc_, B, P, x_rows, 1.0,
                     rows(element_at(buf.d_gates_x, row0 * GH_), batch_ld * GH_),
                     rows(weight_hh_.const_data_ptr(), P), 1.0, buf.dh_state.data_ptr(), P);
      }
    }
  }

  // The weight gradients as GEMMs over all steps, each a sum over N = T * B rows: into
  // compute-type buffers (float for 16-bit storage, as on the CPU), rounded to the storage
  // type once at the end. A 16-bit result from cuBLAS could have had its partial sums
  // reduced in 16 bits (torch's default allows it for half and bfloat16 matmuls).
  std::array<Tensor, 8> gradients(BackwardBuffers& buf, const Tensor& input,
                                  const Tensor& weight_ih, std::array<bool, 8> mask) {
    const int64_t H = s_.H, P = s_.P, N = s_.T * s_.B;
    const int64_t SH = recurrent_gradient_width(), from = cell_.recurrent_bias_from;
    const auto opts = buf.out.options();
    const auto acc_opts = opts.dtype(acc_);
    // C [M, cols] = A^T B with A [N, M] (leading dimension lda) and B [N, cols].
    const auto sum_over_rows = [&](int64_t M, int64_t cols, const void* a, int64_t lda,
                                   const void* b, int64_t ldb, void* c, int64_t ldc) {
      device_.gemm(type_, acc_, M, cols, N, 1.0, transposed(a, lda), rows(b, ldb), 0.0, c, ldc);
    };
    std::array<Tensor, 8> grads;
    if (mask[2]) {
      Tensor grad_w_hh = at::empty({GH_, P}, acc_opts);
      sum_over_rows(input_side_rows(), P, buf.d_gates_x.const_data_ptr(), GH_,
                    buf.h_prevs.const_data_ptr(), P, grad_w_hh.data_ptr(), P);
      if (SH > 0) {
        sum_over_rows(SH, P, buf.d_gates_h.const_data_ptr(), SH, buf.h_prevs.const_data_ptr(), P,
                      element_at(grad_w_hh, from * H * P), P);
      }
      if (cell_.reset_before) {  // rows n multiply r * h_prev (no projection here: P == H)
        sum_over_rows(H, P, element_at(buf.d_gates_x, 2 * H), GH_, buf.reset_h.const_data_ptr(), H,
                      element_at(grad_w_hh, 2 * H * P), P);
      }
      grads[2] = grad_w_hh.to(type_);
    }
    if (mask[3]) grads[3] = buf.d_gates_x.sum(0);
    if (mask[4]) {
      grads[4] = buf.d_gates_x.narrow(1, 0, from * H).sum(0);
      if (SH > 0) grads[4] = at::cat({grads[4], buf.d_gates_h.sum(0)});
    }
    if (mask[7] && projection_) {
      Tensor grad_w_hr = at::empty({P, H}, acc_opts);
      sum_over_rows(P, H, buf.d_projected.const_data_ptr(), P, buf.unprojected.const_data_ptr(), H,
                    grad_w_hr.data_ptr(), H);
      grads[7] = grad_w_hr.to(type_);
    }
    // What only the weight gradients read goes before the input's gradients allocate.
    buf.h_prevs.reset();
    buf.reset_h.reset();
    buf.d_gates_h.reset();
    buf.unprojected.reset();
    buf.d_projected.reset();
    if (mask[1]) {
      const Tensor x = without_padding(input).contiguous();  // [N, I]
      Tensor grad_w_ih = at::empty({GH_, s_.I}, acc_opts);
      sum_over_rows(GH_, s_.I, buf.d_gates_x.const_data_ptr(), GH_, x.const_data_ptr(), s_.I,
                    grad_w_ih.data_ptr(), s_.I);
      grads[1] = grad_w_ih.to(type_);
    }
    if (mask[0]) grads[0] = at::mm(buf.d_gates_x, weight_ih).view(input.sizes());
    if (mask[5]) grads[5] = buf.dh_state.to(type_);
    if (mask[6] && cell_.has_cell_state) grads[6] = buf.dc_state.to(type_);
    for (auto& g : grads) {
      if (!g.defined()) g = at::empty({0}, opts);
    }
    return grads;
  }

  // [input-side biases, recurrent-side biases], each [G*H] in the compute type, or undefined
  // tensors without biases. b_hh of gates below kRecurrentBiasFrom folds into the input side;
  // the recurrent side is undefined where nothing stays there.
  std::pair<Tensor, Tensor> split_biases(const optional<Tensor>& bias_ih,
                                         const optional<Tensor>& bias_hh,
                                         const at::TensorOptions& acc_opts) const {
    if (!bias_ih.has_value() && !bias_hh.has_value()) return {};
    const int64_t folded = cell_.recurrent_bias_from * s_.H;  // b_hh elements that fold in
    Tensor input_side = bias_ih.has_value() ? bias_ih->to(acc_opts, false, /*copy=*/true,
                                                          at::MemoryFormat::Contiguous)
                                            : at::zeros({GH_}, acc_opts);
    Tensor recurrent_side;
    if (bias_hh.has_value()) {
      input_side.narrow(0, 0, folded).add_(bias_hh->narrow(0, 0, folded));
      if (folded < GH_) {
        recurrent_side = at::zeros({GH_}, acc_opts);
        recurrent_side.narrow(0, folded, GH_ - folded)
            .copy_(bias_hh->narrow(0, folded, GH_ - folded));
      }
    }
    return {input_side, recurrent_side};
  }

  // input as [N, I] with the steps past each sequence's end zeroed, so that whatever the
  // padding holds (NaN included) cannot reach d(weight_ih) through 0 * x.
  Tensor without_padding(const Tensor& input) const {
    const Tensor x = input.reshape({s_.T * s_.B, s_.I});
    if (!lengths_.defined()) return x;
    const Tensor steps = at::arange(s_.T, lengths_.options());
    Tensor padding = steps.unsqueeze(1) >= lengths_.unsqueeze(0);  // [T, B]
    if (batch_first_) padding = padding.t();
    return x.masked_fill(padding.reshape({s_.T * s_.B, 1}), 0);
  }

  LayerSizes s_;
  CellSpec cell_;
  int64_t GH_;
  bool batch_first_;
  at::ScalarType type_;
  ElementType element_;
  at::ScalarType acc_;
  Device device_;
  Tensor weight_hh_;
  Tensor weight_hr_;
  bool projection_;
  Tensor lengths_;
  StepGeometry geo_{};
};

// The forward op on a Device: checks, the device guard, then the engine.
template <class Device>
std::tuple<Tensor, Tensor, Tensor, Tensor> device_recurrent_forward(
    const Tensor& input, const Tensor& weight_ih, const Tensor& weight_hh,
    const optional<Tensor>& bias_ih, const optional<Tensor>& bias_hh, const optional<Tensor>& hx,
    const optional<Tensor>& cx, const optional<Tensor>& weight_hr, const optional<Tensor>& lengths,
    c10::string_view cell, bool reverse, bool batch_first, bool need_saved) {
  const LayerSizes sizes = check_forward_args(input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx,
                                              weight_hr, lengths, std::string(cell), batch_first);
  const typename Device::Guard device_guard(input.device());
  if (sizes.B == 0) return empty_batch_forward(sizes, input, batch_first, need_saved);
  DeviceRecurrence<Device> layer(sizes, reverse, batch_first, input, weight_hh, weight_hr, lengths);
  return layer.forward(input, weight_ih, bias_ih, bias_hh, hx, cx, need_saved);
}

// The backward op on a Device.
template <class Device>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>
device_recurrent_backward(const optional<Tensor>& grad_output, const optional<Tensor>& grad_h_n,
                          const optional<Tensor>& grad_c_n, const Tensor& input,
                          const Tensor& weight_ih, const Tensor& weight_hh,
                          const optional<Tensor>& hx, const optional<Tensor>& weight_hr,
                          const optional<Tensor>& lengths, const Tensor& output,
                          const Tensor& saved, c10::string_view cell, bool reverse,
                          bool batch_first, std::array<bool, 8> output_mask) {
  const LayerSizes sizes =
      check_backward_args(grad_output, grad_h_n, grad_c_n, input, weight_ih, weight_hh, hx,
                          weight_hr, lengths, output, saved, std::string(cell), batch_first);
  const typename Device::Guard device_guard(input.device());
  if (sizes.B == 0) {
    const auto g = empty_batch_backward(sizes, input, weight_hr.has_value(), output_mask);
    return {g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]};
  }
  DeviceRecurrence<Device> layer(sizes, reverse, batch_first, input, weight_hh, weight_hr, lengths);
  const auto g = layer.backward(grad_output, grad_h_n, grad_c_n, input, weight_ih, hx, output,
                                saved, output_mask);
  return {g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]};
}

}  // namespace rnnfast::cuda
