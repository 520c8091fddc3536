// The CPU engine's backward: the reverse loop (pointwise pass, then the recurrent GEMM for
// dh), its batch rows sliced over the threads as the forward's, in chunks of steps (some MiB of
// buffers each, like the forward's input projection); after each chunk its share of the
// weight and input gradients is added as GEMMs over the chunk's rows (chunk_gradients.h). So
// the buffers of per-step gradients never grow with T.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <optional>
#include <vector>

#include "chunk_gradients.h"
#include "gemm_cpu.h"
#include "recurrence_layer.h"
#include "recurrence_plan.h"
#include "row_layout.h"
#include "scratch_pool.h"
#include "step_rows.h"
#include "weight_layout.h"

namespace rnnfast::cpu {

template <class Cell, class scalar_t>
class BackwardPass {
  using acc_t = at::opmath_type<scalar_t>;
  using Packed = PackedMatrix<scalar_t>;
  static constexpr int G = Cell::kGates;
  static constexpr int S = Cell::kSaved;
  static constexpr int kRecurrentBiasFrom = Cell::kRecurrentBiasFrom;

 public:
  // Gradients of (input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx, weight_hr) as `mask`
  // asks for them; shapes as recurrent_forward_cpu's arguments.
  BackwardPass(const Recurrence<Cell, scalar_t>& layer,
               const std::optional<at::Tensor>& grad_output,
               const std::optional<at::Tensor>& grad_h_n, const std::optional<at::Tensor>& grad_c_n,
               const at::Tensor& input, const at::Tensor& weight_ih,
               const std::optional<at::Tensor>& hx, const at::Tensor& output,
               const at::Tensor& saved, std::array<bool, 8> mask)
      : layer_(layer), plan_(backward_plan(layer, mask)), mask_(mask) {
    const int64_t B = layer.sizes.B, P = layer.sizes.P;
    const auto opts = output.options();
    g_out_ = grad_output.has_value() ? row_addressable(*grad_output) : at::Tensor();
    output_ = output.contiguous();
    saved_ = saved.contiguous();
    h0_ = hx.has_value() ? hx->contiguous() : new_zeros({B, P}, opts);
    x_ = input.contiguous();
    scratch_ = scratch_empty({plan_.layout.bytes()}, at::kByte);
    allocate_gradients(grad_h_n, grad_c_n, input, opts);
    bind_rows();
    w_hh_ = matrix_ref<scalar_t>(layer.weight_hh, w_hh_storage_);
    w_hr_ = layer.projection ? matrix_ref<scalar_t>(*layer.weight_hr, w_hr_storage_)
                             : MatrixRef<scalar_t>{};
    w_ih_ = mask[0] ? matrix_ref<scalar_t>(weight_ih, w_ih_storage_) : MatrixRef<scalar_t>{};
  }

  // The gradients; those not asked for in `mask` come back empty.
  std::array<at::Tensor, 8> run() {
    const int64_t T = layer_.sizes.T, B = layer_.sizes.B;
    const BatchSlices slices = batch_slices(B, T, layer_.recurrent_weights());
    // Each slice's products, made by the thread that runs it at the first chunk.
    std::vector<std::optional<ReverseProducts>> slice_products(slices.count);
    for (int64_t done = 0; done < T; done += plan_.chunk) {
      const int64_t steps = std::min(plan_.chunk, T - done);
      // Backward visits step T-1-done down to T-done-steps; t0: the chunk's smallest t.
      const int64_t step_hi = T - 1 - done, step_lo = step_hi - steps + 1;
      const int64_t t0 = layer_.reverse ? T - 1 - step_hi : step_lo;
      for_each_slice(slices, [&](int64_t i) {
        const int64_t b0 = slices.begin(i), b1 = slices.end(i, B);
        if (!slice_products[i]) slice_products[i].emplace(reverse_products(b1 - b0));
        for (int64_t step = step_hi; step >= step_lo; --step) {
          const int64_t t = layer_.reverse ? T - 1 - step : step;
          reverse_step(t, (t - t0) * B, b0, b1, *slice_products[i]);
        }
      });
      add_chunk_gradients(t0, steps, done == 0 ? 0.f : 1.f);
    }
    return gradients();
  }

 private:
  // The per-step products of the reverse loop, packed for a slice's row count:
  // dh_prev += dG W_hh (the gates before kRecurrentBiasFrom, then those from it on),
  // d(r * h) = dn W_hn (reset-before GRU), d(unprojected output) = dh W_hr (LSTM projection).
  struct ReverseProducts {
    PackedMatrix<scalar_t> recurrent, split_recurrent, reset_recurrent, projection;
  };

  // Rows of W_hh whose share of dh_prev comes from dgx (the reset-before GRU's n rows act on
  // r * h and are handled through d(r * h)).
  static int64_t input_side_rows(int64_t H) {
    return Cell::kResetBefore ? 2 * H : kRecurrentBiasFrom * H;
  }

  ReverseProducts reverse_products(int64_t rows) const {
    const int64_t T = layer_.sizes.T, H = layer_.sizes.H, P = layer_.sizes.P, SH = plan_.SH;
    const bool projection = layer_.projection;
    return ReverseProducts{
        Packed(rows, P, input_side_rows(H), w_hh_, T),
        Packed(SH > 0 ? rows : 0, P, SH, from_row(w_hh_, kRecurrentBiasFrom * H), T),
        Packed(Cell::kResetBefore ? rows : 0, H, H, from_row(w_hh_, 2 * H), T),
        Packed(projection ? rows : 0, H, P, projection ? w_hr_ : w_hh_, T)};
  }

  // The gradients summed over chunks, in the compute type; the first chunk's products
  // overwrite them (every row of them), the later ones add.
  void allocate_gradients(const std::optional<at::Tensor>& grad_h_n,
                          const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input,
                          const at::TensorOptions& opts) {
    const int64_t B = layer_.sizes.B, H = layer_.sizes.H, P = layer_.sizes.P;
    const int64_t I = layer_.sizes.I, GH = layer_.GH;
    const auto acc_opts = opts.dtype(c10::CppTypeToScalarType<acc_t>::value);
    dh_state_ = grad_h_n.has_value()
                    ? grad_h_n->to(acc_opts, false, /*copy=*/true, at::MemoryFormat::Contiguous)
                    : new_zeros({B, P}, acc_opts);
    dc_state_ = Cell::kHasCellState && grad_c_n.has_value()
                    ? grad_c_n->to(acc_opts, false, /*copy=*/true, at::MemoryFormat::Contiguous)
                    : new_zeros({Cell::kHasCellState ? B : 0, H}, acc_opts);
    grad_w_ih_ = new_tensor({mask_[1] ? GH : 0, I}, acc_opts);
    grad_w_hh_ = new_tensor({mask_[2] ? GH : 0, P}, acc_opts);
    grad_w_hr_ = new_tensor({mask_[7] && layer_.projection ? P : 0, H}, acc_opts);
    input_bias_sums_.assign(mask_[3] || mask_[4] ? GH : 0, acc_t(0));
    recurrent_bias_sums_.assign(mask_[4] ? plan_.SH : 0, acc_t(0));
    grad_input_ = mask_[0] ? new_tensor(input.sizes(), opts) : new_tensor({0}, opts);
  }

  // The pointwise passes' buffers: the scratch's sections, the saved tensors, the state
  // gradients.
  void bind_rows() {
    rows_.SH = plan_.SH;
    rows_.g_out = strided_rows(g_out_);
    rows_.out = output_.const_data_ptr<scalar_t>();
    rows_.sv = S > 0 ? saved_.const_data_ptr<scalar_t>() : nullptr;
    rows_.h0 = h0_.const_data_ptr<scalar_t>();
    rows_.dgx = section_of<scalar_t>(scratch_, plan_.dgx_at);
    rows_.dgh = section_of<scalar_t>(scratch_, plan_.dgh_at);
    rows_.hp = plan_.h_prev_in_place ? nullptr : section_of<scalar_t>(scratch_, plan_.hp_at);
    rows_.rh = section_of<scalar_t>(scratch_, plan_.rh_at);
    rows_.um = section_of<scalar_t>(scratch_, plan_.um_at);
    rows_.dproj = section_of<scalar_t>(scratch_, plan_.dproj_at);
    rows_.dh = dh_state_.data_ptr<acc_t>();
    rows_.dc = dc_state_.data_ptr<acc_t>();
    rows_.d_step_operand = section_of<acc_t>(scratch_, plan_.d_step_operand_at);
  }

  // Step t of the reverse loop for the batch rows [b0, b1), at chunk row first_row + b0.
  void reverse_step(int64_t t, int64_t first_row, int64_t b0, int64_t b1,
                    const ReverseProducts& products) const {
    const int64_t P = layer_.sizes.P, H = layer_.sizes.H, GH = layer_.GH, SH = plan_.SH;
    const int64_t slice_row = first_row + b0;  // the chunk-buffer row of batch entry b0
    const BackwardRows<Cell, scalar_t>& r = rows_;
    if (layer_.projection) {
      // d(unprojected) = dh W_hr.
      r.projected_gradient(t, first_row, b0, b1);
      products.projection.multiply(dense<scalar_t>(r.dproj + slice_row * P, P), 0.f,
                                   r.d_step_operand + b0 * H, H);
    }
    r.gates(t, first_row, b0, b1);
    if constexpr (Cell::kResetBefore) {
      // d(r * h_prev) = dn_pre W_hn; then r's gradient and r's share of dh_prev.
      products.reset_recurrent.multiply(dense<scalar_t>(r.dgx + slice_row * GH + 2 * H, GH), 0.f,
                                        r.d_step_operand + b0 * H, H);
      r.reset(t, first_row, b0, b1);
    }
    // dh_prev += dG W_hh, the gates before kRecurrentBiasFrom from the input-side gradients.
    products.recurrent.multiply(dense<scalar_t>(r.dgx + slice_row * GH, GH), 1.f, r.dh + b0 * P, P);
    if (SH > 0) {
      products.split_recurrent.multiply(dense<scalar_t>(r.dgh + slice_row * SH, SH), 1.f,
                                        r.dh + b0 * P, P);
    }
  }

  // The chunk's share of the gradients, steps [t0, t0 + steps): GEMMs over its steps * B rows,
  // added to the earlier chunks' (beta = 1) or replacing what the buffers hold (beta = 0).
  void add_chunk_gradients(int64_t t0, int64_t steps, float beta) {
    const int64_t H = layer_.sizes.H, P = layer_.sizes.P, I = layer_.sizes.I, GH = layer_.GH;
    const int64_t SH = plan_.SH, rows = steps * layer_.sizes.B;
    const ChunkGradients<Cell, scalar_t> chunk{layer_};
    const BackwardRows<Cell, scalar_t>& r = rows_;
    const MatrixRef<scalar_t> dgx_t{r.dgx, GH, true};  // [GH, rows] as dgx^T
    if (mask_[2]) {
      acc_t* gw = grad_w_hh_.data_ptr<acc_t>();
      chunk.add_h_prev_products(input_side_rows(H), dgx_t, t0, steps, r.out, r.h0, r.hp, beta, gw);
      if (SH > 0) {
        chunk.add_h_prev_products(SH, {r.dgh, SH, true}, t0, steps, r.out, r.h0, r.hp, beta,
                                  gw + kRecurrentBiasFrom * H * P);
      }
      if constexpr (Cell::kResetBefore) {  // rows n multiply r * h_prev
        gemm<scalar_t>(H, P, rows, {r.dgx + 2 * H, GH, true}, dense<scalar_t>(r.rh, H), beta,
                       gw + 2 * H * P, P);
      }
    }
    if (!input_bias_sums_.empty()) add_column_sums(r.dgx, rows, GH, input_bias_sums_.data());
    if (!recurrent_bias_sums_.empty()) {
      add_column_sums(r.dgh, rows, SH, recurrent_bias_sums_.data());
    }
    if (grad_w_hr_.numel() > 0) {
      gemm<scalar_t>(P, H, rows, {r.dproj, P, true}, dense<scalar_t>(r.um, H), beta,
                     grad_w_hr_.data_ptr<acc_t>(), H);
    }
    const scalar_t* x = x_.const_data_ptr<scalar_t>();
    if (mask_[1]) {
      acc_t* gw = grad_w_ih_.data_ptr<acc_t>();
      if (plan_.x_in_place) {
        chunk.add_step_products(GH, I, dgx_t, x, t0, 0, 0, steps, beta, gw);
      } else {
        scalar_t* x_copy = section_of<scalar_t>(scratch_, plan_.x_copy_at);
        gemm<scalar_t>(GH, I, rows, dgx_t, chunk.chunk_input(x, t0, steps, x_copy), beta, gw, I);
      }
    }
    if (mask_[0]) {
      acc_t* dx_rows = section_of<acc_t>(scratch_, plan_.dx_rows_at);
      chunk.input_gradient(r.dgx, t0, steps, w_ih_, dx_rows, grad_input_);
    }
  }

  std::array<at::Tensor, 8> gradients() const {
    const int64_t H = layer_.sizes.H, GH = layer_.GH, SH = plan_.SH;
    const auto opts = output_.options();
    std::array<at::Tensor, 8> grads;
    if (mask_[0]) grads[0] = grad_input_;
    if (mask_[1]) grads[1] = grad_w_ih_.to(opts.dtype());
    if (mask_[2]) grads[2] = grad_w_hh_.to(opts.dtype());
    if (mask_[3]) grads[3] = sums_tensor<scalar_t>(input_bias_sums_, 0, GH, opts);
    if (mask_[4]) {
      grads[4] = sums_tensor<scalar_t>(input_bias_sums_, 0, kRecurrentBiasFrom * H, opts);
      if (SH > 0) {
        grads[4] = at::cat({grads[4], sums_tensor<scalar_t>(recurrent_bias_sums_, 0, SH, opts)});
      }
    }
    if (mask_[5]) grads[5] = dh_state_.to(opts.dtype());
    if (mask_[6] && Cell::kHasCellState) grads[6] = dc_state_.to(opts.dtype());
    if (mask_[7] && layer_.projection) grads[7] = grad_w_hr_.to(opts.dtype());
    for (auto& g : grads) {
      if (!g.defined()) g = new_tensor({0}, opts);
    }
    return grads;
  }

  // grad_output with unit stride along its last dimension, so that its rows can be read in
  // place. A broadcast gradient (that of output.sum(), say) stays broadcast: only its distinct
  // values are materialised, not the whole sequence.
  static at::Tensor row_addressable(const at::Tensor& g) {
    if (g.stride(2) == 1 || g.size(2) == 1) return g;
    at::Tensor distinct = g;
    for (int64_t d = 0; d < 2; ++d) {
      if (g.stride(d) == 0) distinct = distinct.narrow(d, 0, 1);
    }
    return distinct.contiguous().expand(g.sizes());
  }

  StridedRows<scalar_t> strided_rows(const at::Tensor& g) const {
    if (!g.defined()) return {nullptr, 0, 0};
    const int64_t t_dim = layer_.seq.batch_first ? 1 : 0;
    return {g.const_data_ptr<scalar_t>(), g.stride(t_dim), g.stride(1 - t_dim)};
  }

  const Recurrence<Cell, scalar_t>& layer_;
  const BackwardPlan plan_;
  const std::array<bool, 8> mask_;
  at::Tensor g_out_, output_, saved_, h0_, x_;  // contiguous (g_out_: row_addressable)
  at::Tensor scratch_;
  at::Tensor dh_state_, dc_state_;                // [B, P], [B, H] in the compute type
  at::Tensor grad_w_ih_, grad_w_hh_, grad_w_hr_;  // in the compute type
  std::vector<acc_t> input_bias_sums_, recurrent_bias_sums_;
  at::Tensor grad_input_;
  at::Tensor w_hh_storage_, w_hr_storage_, w_ih_storage_;  // where a layout needs a copy
  MatrixRef<scalar_t> w_hh_{}, w_hr_{}, w_ih_{};
  BackwardRows<Cell, scalar_t> rows_{layer_};
};

}  // namespace rnnfast::cpu
