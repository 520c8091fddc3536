// The CPU engine's forward: the input projection as one GEMM per chunk of steps; then per step
// one recurrent GEMM into preallocated memory and one fused, vectorised pointwise pass over the
// batch rows (step_rows.h), each thread taking a slice of the rows through the chunk's steps
// where the batch is large enough (batch_slices.h), or a slice of the hidden units where it is
// too small to split (unit_slices.h). Nothing is allocated and no op is dispatched per step.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

#include "gemm_cpu.h"
#include "recurrence_layer.h"
#include "recurrence_plan.h"
#include "row_layout.h"
#include "scratch_pool.h"
#include "step_rows.h"
#include "unit_slices.h"
#include "weight_layout.h"

namespace rnnfast::cpu {

template <class Cell, class scalar_t>
class ForwardPass {
  using acc_t = at::opmath_type<scalar_t>;
  using Packed = PackedMatrix<scalar_t>;
  static constexpr int G = Cell::kGates;
  static constexpr int S = Cell::kSaved;

 public:
  // input [N, I], weight_ih [G*H, I], biases [G*H]; h0 [B, P], c0 [B, H].
  ForwardPass(const Recurrence<Cell, scalar_t>& layer, const at::Tensor& input,
              const at::Tensor& weight_ih, const std::optional<at::Tensor>& bias_ih,
              const std::optional<at::Tensor>& bias_hh, const std::optional<at::Tensor>& hx,
              const std::optional<at::Tensor>& cx, bool need_saved)
      : layer_(layer), plan_(forward_plan(layer, weight_ih)) {
    allocate_outputs(input, hx, cx, need_saved);
    const bool transpose_input =
        layer.seq.batch_first && !plan_.one_chunk && !plan_.per_step_projection;
    x_ = (transpose_input ? input.transpose(0, 1) : input).contiguous();
    scratch_ = scratch_empty({plan_.layout.bytes()}, at::kByte);
    prepare_weights(weight_ih);
    biases_ = layer.split_biases(bias_ih, bias_hh);
    bind_rows();
  }

  // Returns output [N, P], h_n [B, P], c_n [B, H] (or empty), saved [N, S*H] (or empty, and
  // then not computed, when need_saved is false).
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> run() {
    const int64_t T = layer_.sizes.T, B = layer_.sizes.B, H = layer_.sizes.H;
    // Each slice's products, made by the thread that runs it (in its cache) at the first chunk.
    std::vector<std::optional<StepProducts>> slice_products(plan_.slices.count);
    for (int64_t done = 0; done < T; done += plan_.chunk) {
      const int64_t steps = std::min(plan_.chunk, T - done);
      const int64_t chunk_t0 = layer_.reverse ? T - done - steps : done;
      rows_.chunk_t0 = chunk_t0;
      project_chunk(chunk_t0, steps);
      const auto step_of = [&](int64_t k) {
        return layer_.reverse ? chunk_t0 + steps - 1 - k : chunk_t0 + k;
      };
      if (plan_.unit_threads > 1) {
        for_each_unit_slice(H, plan_.unit_threads,
                            [&](int64_t j0, int64_t j1, const UnitTeam& team) {
                              for (int64_t k = 0; k < steps; ++k) {
                                step_units(step_of(k), j0, j1, team);
                              }
                            });
        continue;
      }
      for_each_slice(plan_.slices, [&](int64_t i) {
        const int64_t b0 = plan_.slices.begin(i), b1 = plan_.slices.end(i, B);
        if (!slice_products[i]) slice_products[i].emplace(step_products(b1 - b0));
        for (int64_t k = 0; k < steps; ++k) step_rows(step_of(k), b0, b1, *slice_products[i]);
      });
    }
    const auto opts = output_.options();
    at::Tensor c_n = Cell::kHasCellState ? c_state_.to(opts.dtype()) : new_tensor({0}, opts);
    return {output_, h_n_, c_n, saved_};
  }

 private:
  // The per-step products of a slice of `rows` batch rows, packed for that row count.
  struct StepProducts {
    Packed recurrent, reset_recurrent, projection;
  };

  StepProducts step_products(int64_t rows) const {
    const int64_t T = layer_.sizes.T, H = layer_.sizes.H, P = layer_.sizes.P;
    return StepProducts{Packed(rows, plan_.gh_cols, P, w_hh_, T),
                        Packed(Cell::kResetBefore ? rows : 0, H, H, from_column(w_hh_, 2 * H), T),
                        Packed(layer_.projection ? rows : 0, P, H, w_hr_, T)};
  }

  void allocate_outputs(const at::Tensor& input, const std::optional<at::Tensor>& hx,
                        const std::optional<at::Tensor>& cx, bool need_saved) {
    const int64_t B = layer_.sizes.B, H = layer_.sizes.H, P = layer_.sizes.P;
    const bool batch_first = layer_.seq.batch_first;
    const auto opts = input.options();
    const auto acc_opts = opts.dtype(c10::CppTypeToScalarType<acc_t>::value);
    output_ = new_tensor(sequence_shape(layer_.sizes, P, batch_first), opts);
    h_n_ = hx.has_value() ? hx->clone(at::MemoryFormat::Contiguous) : new_zeros({B, P}, opts);
    if constexpr (Cell::kHasCellState) {
      c_state_ = cx.has_value() ? cx->to(acc_opts, /*non_blocking=*/false, /*copy=*/true,
                                         at::MemoryFormat::Contiguous)
                                : new_zeros({B, H}, acc_opts);
    }
    saved_ = (S > 0 && need_saved)
                 ? new_tensor(sequence_shape(layer_.sizes, S * H, batch_first), opts)
                 : new_tensor({0}, opts);
  }

  // The weights as the products' right-hand operands, W^T: copied or read in place as the
  // plan says.
  void prepare_weights(const at::Tensor& weight_ih) {
    const auto copy_to = [&](bool copy, int64_t at) {
      return copy ? section_of<scalar_t>(scratch_, at) : nullptr;
    };
    w_ih_ = weight_transposed<scalar_t>(  // [I, G*H]
        weight_ih, copy_to(plan_.copy_w_ih, plan_.w_ih_at), w_ih_storage_);
    w_hh_ = weight_transposed<scalar_t>(  // [P, G*H]
        layer_.weight_hh, copy_to(plan_.copy_w_hh, plan_.w_hh_at), w_hh_storage_);
    scalar_t* w_hr_copy = copy_to(plan_.copy_w_hr, plan_.w_hr_at);
    w_hr_ = layer_.projection  // [H, P]
                ? weight_transposed<scalar_t>(*layer_.weight_hr, w_hr_copy, w_hr_storage_)
                : w_hh_;
  }

  // The pointwise passes' buffers: the scratch's sections and the outputs.
  void bind_rows() {
    const int64_t B = layer_.sizes.B, GH = layer_.GH;
    acc_t* gx = section_of<acc_t>(scratch_, plan_.gx_at);
    rows_.one_chunk = plan_.one_chunk;
    rows_.gx = gx;
    rows_.gh = gx + plan_.chunk * B * GH;
    rows_.projected = rows_.gh + B * GH;
    rows_.step_operand = section_of<scalar_t>(scratch_, plan_.step_operand_at);
    rows_.out = output_.data_ptr<scalar_t>();
    rows_.h = h_n_.data_ptr<scalar_t>();
    rows_.c = Cell::kHasCellState ? c_state_.data_ptr<acc_t>() : nullptr;
    rows_.sv = saved_.numel() > 0 ? saved_.data_ptr<scalar_t>() : nullptr;
    rows_.input_bias = biases_.empty() ? nullptr : biases_.data();
    rows_.recurrent_bias =
        (biases_.empty() || Cell::kRecurrentBiasFrom >= G) ? nullptr : biases_.data() + GH;
  }

  // The input projection of the chunk's steps [chunk_t0, chunk_t0 + steps) into gx.
  void project_chunk(int64_t chunk_t0, int64_t steps) {
    const int64_t T = layer_.sizes.T, B = layer_.sizes.B, I = layer_.sizes.I, GH = layer_.GH;
    acc_t* gx = section_of<acc_t>(scratch_, plan_.gx_at);
    const scalar_t* x_data = x_.const_data_ptr<scalar_t>();
    const SingleThreadedBlas projection_on_this_thread(plan_.project_locally(steps, B, GH, I));
    if (plan_.per_step_projection) {
      for (int64_t k = 0; k < steps; ++k) {
        gemm<scalar_t>(B, GH, I, dense(x_data + layer_.seq.row(chunk_t0 + k, 0) * I, T * I), w_ih_,
                       0.f, gx + k * B * GH, GH);
      }
    } else {
      gemm<scalar_t>(steps * B, GH, I, dense(x_data + (plan_.one_chunk ? 0 : chunk_t0 * B * I), I),
                     w_ih_, 0.f, gx, GH);
    }
  }

  // Step t of the batch rows [b0, b1).
  void step_rows(int64_t t, int64_t b0, int64_t b1, const StepProducts& products) const {
    const int64_t H = layer_.sizes.H, P = layer_.sizes.P, GH = layer_.GH;
    products.recurrent.multiply(dense<scalar_t>(rows_.h + b0 * P, P), 0.f, rows_.gh + b0 * GH, GH);
    if constexpr (Cell::kResetBefore) {
      rows_.reset(t, b0, b1, 0, H);
      products.reset_recurrent.multiply(dense<scalar_t>(rows_.step_operand + b0 * H, H), 0.f,
                                        rows_.gh + b0 * GH + 2 * H, GH);
    }
    rows_.gates(t, b0, b1, 0, H);
    if (layer_.projection) {
      products.projection.multiply(dense<scalar_t>(rows_.step_operand + b0 * H, H), 0.f,
                                   rows_.projected + b0 * P, P);
      rows_.projected_output(t, b0, b1);
    }
  }

  // Step t of every row for the units [j0, j1) of a unit slice: its columns of each gate's
  // products (all of h read), then, once every thread has read h, their pointwise math
  // (its units of h written); the step ends when all have written theirs.
  void step_units(int64_t t, int64_t j0, int64_t j1, const UnitTeam& team) const {
    const int64_t B = layer_.sizes.B, H = layer_.sizes.H, P = layer_.sizes.P, GH = layer_.GH;
    const int64_t units = j1 - j0;
    team.work([&] {
      for (int g = 0; g < plan_.gh_cols / H; ++g) {
        gemm<scalar_t>(B, units, P, dense<scalar_t>(rows_.h, P), from_column(w_hh_, g * H + j0),
                       0.f, rows_.gh + g * H + j0, GH);
      }
    });
    if constexpr (Cell::kResetBefore) {
      team.work([&] { rows_.reset(t, 0, B, j0, j1); });
      // Every thread has read h, and all of r * h, which W_hn's columns read, is written.
      team.barrier();
      team.work([&] {
        gemm<scalar_t>(B, units, H, dense<scalar_t>(rows_.step_operand, H),
                       from_column(w_hh_, 2 * H + j0), 0.f, rows_.gh + 2 * H + j0, GH);
      });
    } else {
      team.barrier();  // every thread has read h
    }
    team.work([&] { rows_.gates(t, 0, B, j0, j1); });
    team.barrier();
  }

  const Recurrence<Cell, scalar_t>& layer_;
  const ForwardPlan plan_;
  at::Tensor output_, h_n_, c_state_, saved_;
  at::Tensor x_;  // the input, contiguous, time-major where the plan needs it so
  at::Tensor scratch_;
  at::Tensor w_ih_storage_, w_hh_storage_, w_hr_storage_;  // where a layout needs a copy
  MatrixRef<scalar_t> w_ih_{}, w_hh_{}, w_hr_{};
  std::vector<acc_t> biases_;  // Recurrence::split_biases
  ForwardRows<Cell, scalar_t> rows_{layer_};
};

}  // namespace rnnfast::cpu
