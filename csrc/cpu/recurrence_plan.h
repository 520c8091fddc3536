// The plans of the CPU engine's passes: how the steps are chunked, which weights are copied
// or packed, how the batch rows or the hidden units are sliced over the threads, and the layout
// of the scratch buffer that holds a call's buffers (one acquisition of the scratch pool: each
// costs a lock and a tensor).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cstdint>

#include "gemm_cpu.h"
#include "recurrence_layer.h"
#include "scratch_pool.h"
#include "unit_slices.h"
#include "weight_layout.h"

namespace rnnfast::cpu {

// The steps of a chunk, for T steps in chunks of about `target` steps: T split evenly, where
// a remainder would leave a last chunk of a few steps, whose GEMMs over few rows run well below
// BLAS's rate (and which costs a round of fixed costs of its own); a single chunk up to a
// quarter over the target.
inline int64_t even_chunks(int64_t T, int64_t target) {
  target = std::clamp<int64_t>(target, 1, T);
  if (T <= target + target / 4) return T;
  const int64_t chunks = (T + target - 1) / target;
  return (T + chunks - 1) / chunks;
}

// Weights of at most this many elements are copied transposed even for a single step.
constexpr int64_t kSmallWeightElements = 4096;

// Below this many multiply-adds, a forward whose steps run on one thread (a single batch
// slice) forms its input projection on that thread too, where BLAS would split it from 1M
// (kThreadedGemmMacs in gemm_cpu.cpp): the step loop, which reads the projection next, runs
// longer after a split one.
constexpr int64_t kLocalProjectionMacs = 1 << 21;

struct ForwardPlan {
  int64_t chunk;             // steps of the input projection formed at a time
  bool one_chunk;            // chunk == T: the projection takes the input in its own layout
  bool per_step_projection;  // batch-first chunks projected a step at a time
  int64_t gh_cols;           // columns of h's product with W_hh before the step operand's
  BatchSlices slices;
  int64_t unit_threads;  // > 1: the units are split over the threads instead of the rows
  bool copy_w_ih, copy_w_hh, copy_w_hr;  // transposed copies (weight_layout.h)
  // Scratch: gx [chunk * B, G*H] | gh [B, G*H] | projected h [B, P], in the compute type; the
  // step operand (r * h of the reset-before GRU, or the unprojected LSTM output) [B, H]; the
  // weights' transposed copies.
  ScratchLayout layout;
  int64_t gx_at, step_operand_at, w_ih_at, w_hh_at, w_hr_at;

  // Whether a chunk of `steps` steps forms its input projection on the calling thread.
  bool project_locally(int64_t steps, int64_t B, int64_t GH, int64_t I) const {
    return slices.count == 1 && steps * B * GH * I < kLocalProjectionMacs;
  }
};

template <class Cell, class scalar_t>
ForwardPlan forward_plan(const Recurrence<Cell, scalar_t>& layer, const at::Tensor& weight_ih) {
  using acc_t = at::opmath_type<scalar_t>;
  using Packed = PackedMatrix<scalar_t>;
  const int64_t T = layer.sizes.T, B = layer.sizes.B, H = layer.sizes.H, P = layer.sizes.P;
  const int64_t GH = layer.GH;
  const bool projection = layer.projection;
  ForwardPlan plan;
  // The input projection is formed for a chunk of steps at a time: a buffer of about 8 MiB,
  // mostly cache-resident, instead of one the size of the sequence (and of the peak memory).
  plan.chunk = even_chunks(T, (1 << 21) / std::max<int64_t>(B * GH, 1));
  // Chunks are formed time-major. A single chunk takes the input in the caller's layout; a
  // batch-first one is projected a step at a time (a step's rows are evenly strided) where
  // a step has rows enough for an efficient GEMM, else from a time-major copy of the input.
  plan.one_chunk = plan.chunk == T;
  plan.per_step_projection = layer.seq.batch_first && !plan.one_chunk && B >= 32;
  // The n part of the reset-before GRU's recurrent product waits for r * h.
  plan.gh_cols = Cell::kResetBefore ? 2 * H : GH;
  plan.slices = batch_slices(B, T, layer.recurrent_weights());
  const int64_t slice_rows = plan.slices.rows;
  // Too few rows to split: the units instead (unit_slices.h), products from the plain
  // transposed copy of W_hh (a split sequence has steps enough for copy_weight), whose
  // columns a thread can take as they lie. Not with the LSTM projection, whose product needs
  // every unit's output before any row of h.
  plan.unit_threads = projection ? 1 : unit_slice_threads(B, T, H, layer.recurrent_weights());
  // A single step (a cell's call) reads its weights in place unless they are small: BLAS takes
  // them as they lie at the same speed, and copying a large weight for one product of a few
  // rows takes longer than the product.
  const auto copy_weight = [&](const at::Tensor& w) {
    return T * B >= 16 && (T > 1 || w.numel() <= kSmallWeightElements);
  };
  // A packed weight is copied into the packed layout anyway, from any layout.
  const bool w_hh_packed = plan.unit_threads == 1 &&
                           Packed::packs(slice_rows, plan.gh_cols, P, T) &&
                           (!Cell::kResetBefore || Packed::packs(slice_rows, H, H, T));
  plan.copy_w_ih = copy_weight(weight_ih);
  plan.copy_w_hh = copy_weight(layer.weight_hh) && !w_hh_packed;
  plan.copy_w_hr =
      projection && copy_weight(*layer.weight_hr) && !Packed::packs(slice_rows, P, H, T);

  ScratchLayout& layout = plan.layout;
  plan.gx_at = layout.add<acc_t>(plan.chunk * B * GH + B * GH + (projection ? B * P : 0));
  plan.step_operand_at = layout.add<scalar_t>((Cell::kResetBefore || projection) ? B * H : 0);
  plan.w_ih_at =
      layout.add<scalar_t>(plan.copy_w_ih ? transposed_copy_size<scalar_t>(weight_ih) : 0);
  plan.w_hh_at =
      layout.add<scalar_t>(plan.copy_w_hh ? transposed_copy_size<scalar_t>(layer.weight_hh) : 0);
  plan.w_hr_at =
      layout.add<scalar_t>(plan.copy_w_hr ? transposed_copy_size<scalar_t>(*layer.weight_hr) : 0);
  return plan;
}

struct BackwardPlan {
  int64_t chunk;  // steps of the reverse loop between two rounds of weight-gradient GEMMs
  int64_t R;      // rows of a chunk, time-major: (t - first t) * B + b
  int64_t SH;     // width of the separate recurrent gradients, (G - kRecurrentBiasFrom) * H
  // Whether the weight gradients' GEMMs read h_prev from the output, and the input, where
  // they lie, rather than from a copy of the chunk's rows.
  bool h_prev_in_place, x_in_place;
  // Scratch, [R, *] each (empty where not needed): d_gates_x, d_gates_h, h_prev, r * h or
  // the unprojected output, d_projected, the input rows, their gradient in the compute type;
  // and d_step_operand [B, H].
  ScratchLayout layout;
  int64_t dgx_at, dgh_at, hp_at, rh_at, um_at, dproj_at, x_copy_at, dx_rows_at;
  int64_t d_step_operand_at;
};

// `mask`: the gradients asked for, as Recurrence's backward takes it.
template <class Cell, class scalar_t>
BackwardPlan backward_plan(const Recurrence<Cell, scalar_t>& layer, std::array<bool, 8> mask) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t T = layer.sizes.T, B = layer.sizes.B, H = layer.sizes.H, P = layer.sizes.P;
  const int64_t I = layer.sizes.I, GH = layer.GH;
  const bool projection = layer.projection;
  BackwardPlan plan;
  plan.SH = (Cell::kGates - Cell::kRecurrentBiasFrom) * H;
  // About 16 MiB of chunk buffers in float32, and at least 1024 rows so the GEMMs stay
  // efficient.
  const int64_t row_width = GH + plan.SH + P + 2 * H + P + 2 * I;
  plan.chunk =
      even_chunks(T, std::max((1 << 22) / std::max<int64_t>(B * row_width, 1), (1023 + B) / B));
  const int64_t R = plan.chunk * B;
  plan.R = R;
  // A copy where reversed sequences of different lengths start from h0 at different steps,
  // or where padding must be zeroed, or where batch-first steps have too few rows for
  // efficient GEMMs of their own.
  plan.h_prev_in_place = layer.step_rows_together() && !(layer.reverse && layer.lengths);
  plan.x_in_place = layer.step_rows_together() && !layer.lengths;
  ScratchLayout& layout = plan.layout;
  plan.dgx_at = layout.add<scalar_t>(R * GH);
  plan.dgh_at = layout.add<scalar_t>(plan.SH > 0 ? R * plan.SH : 0);
  plan.hp_at = layout.add<scalar_t>(plan.h_prev_in_place ? 0 : R * P);
  plan.rh_at = layout.add<scalar_t>(Cell::kResetBefore ? R * H : 0);
  plan.um_at = layout.add<scalar_t>(projection ? R * H : 0);
  plan.dproj_at = layout.add<scalar_t>(projection ? R * P : 0);
  plan.x_copy_at = layout.add<scalar_t>(mask[1] && !plan.x_in_place ? R * I : 0);
  // Only where grad_input does not take the products directly (see input_gradient).
  plan.dx_rows_at = layout.add<acc_t>(mask[0] && !layer.dx_in_place() ? R * I : 0);
  plan.d_step_operand_at = layout.add<acc_t>((Cell::kResetBefore || projection) ? B * H : 0);
  return plan;
}

}  // namespace rnnfast::cpu
