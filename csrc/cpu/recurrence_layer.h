// One layer in one direction as the CPU engine's passes see it: its sizes, the sequences'
// layout and lengths, its recurrent weights, and what follows from those alone.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <type_traits>
#include <vector>

#include "../checks.h"
#include "batch_slices.h"
#include "row_layout.h"

namespace rnnfast::cpu {

// Batch-first steps of at least this many rows are GEMM operands of their own in the weight
// gradients (strided rows, in place); fewer are copied into one time-major matrix first, as
// GEMMs over so few rows run well below BLAS's rate.
constexpr int64_t kStepGemmRows = 128;

template <class Cell, class scalar_t>
struct Recurrence {
  using acc_t = at::opmath_type<scalar_t>;
  static constexpr int G = Cell::kGates;

  Recurrence(const LayerSizes& layer_sizes, bool reverse_order, bool batch_first,
             const at::Tensor& w_hh, const std::optional<at::Tensor>& w_hr,
             const std::optional<at::Tensor>& sequence_lengths)
      : sizes(layer_sizes),
        seq{layer_sizes.T, layer_sizes.B, batch_first},
        reverse(reverse_order),
        GH(G * layer_sizes.H),
        weight_hh(w_hh),
        weight_hr(w_hr),
        projection(w_hr.has_value()) {
    if (sequence_lengths.has_value()) {
      lengths_storage = sequence_lengths->to(at::kLong).contiguous();
      lengths = lengths_storage.const_data_ptr<int64_t>();
    }
  }

  bool active(int64_t t, int64_t b) const { return !lengths || t < lengths[b]; }

  bool first_step(int64_t t, int64_t b) const {
    if (!reverse) return t == 0;
    return t == (lengths ? lengths[b] : sizes.T) - 1;
  }

  // The state before step t of batch entry b: a row of the output, or of h0 at the first step.
  const scalar_t* h_prev_of(int64_t t, int64_t b, const scalar_t* out, const scalar_t* h0) const {
    return first_step(t, b) ? h0 + b * sizes.P
                            : out + seq.row(reverse ? t + 1 : t - 1, b) * sizes.P;
  }

  // The weights that every step multiplies: W_hh [G*H, P], and W_hr [P, H] if any.
  RecurrentWeights recurrent_weights() const {
    const int64_t elements = GH * sizes.P + (projection ? sizes.P * sizes.H : 0);
    return {elements, elements * static_cast<int64_t>(weight_hh.element_size())};
  }

  // Whether a step's rows are one GEMM operand where they lie: time-major, or batch-first
  // steps of kStepGemmRows rows or more.
  bool step_rows_together() const { return !seq.batch_first || sizes.B >= kStepGemmRows; }

  // Whether grad_input takes dgx W_ih straight from the GEMMs: where the compute type is the
  // storage type and step_rows_together(). Batch-first steps of fewer rows go through a
  // time-major buffer and a copy, which is faster than a GEMM per step.
  bool dx_in_place() const { return std::is_same_v<scalar_t, acc_t> && step_rows_together(); }

  // [input-side biases | recurrent-side biases], each [G*H], or nothing without biases.
  // b_hh of gates below kRecurrentBiasFrom is folded into the input side.
  std::vector<acc_t> split_biases(const std::optional<at::Tensor>& bias_ih,
                                  const std::optional<at::Tensor>& bias_hh) const {
    if (!bias_ih.has_value() && !bias_hh.has_value()) return {};
    std::vector<acc_t> out(2 * GH, acc_t(0));
    const int64_t recurrent_bias_from = Cell::kRecurrentBiasFrom * sizes.H;
    if (bias_ih.has_value()) {
      const at::Tensor b = bias_ih->contiguous();
      const scalar_t* p = b.const_data_ptr<scalar_t>();
      for (int64_t k = 0; k < GH; ++k) out[k] = static_cast<acc_t>(p[k]);
    }
    if (bias_hh.has_value()) {
      const at::Tensor b = bias_hh->contiguous();
      const scalar_t* p = b.const_data_ptr<scalar_t>();
      for (int64_t k = 0; k < GH; ++k) {
        out[k < recurrent_bias_from ? k : GH + k] += static_cast<acc_t>(p[k]);
      }
    }
    return out;
  }

  LayerSizes sizes;
  Seq seq;
  bool reverse;
  int64_t GH;  // G * H: the width of the gates
  at::Tensor weight_hh;
  std::optional<at::Tensor> weight_hr;
  at::Tensor lengths_storage;
  bool projection;  // LSTM with weight_hr: h = W_hr (the cell's output), P wide
  const int64_t* lengths = nullptr;
};

}  // namespace rnnfast::cpu
