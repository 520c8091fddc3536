// The pointwise passes of a step over a range of batch rows (and of hidden units), the CPU
// twin of the CUDA engine's step_elements.h: each row vectorised along its units through the
// cells of cells.h, rows in parallel where a step's work is large enough (for_each_row).
// Buffers are raw pointers into the passes' tensors and scratch (forward_pass.h,
// backward_pass.h document their shapes).
#pragma once

#include <cstdint>
#include <type_traits>

#include "recurrence_layer.h"
#include "row_layout.h"
#include "vec_math.h"

namespace rnnfast::cpu {

template <class Cell, class scalar_t>
struct ForwardRows {
  using acc_t = at::opmath_type<scalar_t>;
  using V = VecOf<scalar_t>;
  static constexpr int G = Cell::kGates;
  static constexpr int S = Cell::kSaved;
  static constexpr int kSavedSlots = S > 0 ? S : 1;

  const Recurrence<Cell, scalar_t>& layer;
  bool one_chunk;               // gx holds all T steps, in the caller's layout
  int64_t chunk_t0 = 0;         // the first (smallest) step of the chunk held in gx
  const acc_t* gx;              // [chunk * B, G*H], time-major (or [T*B, G*H] for one chunk)
  acc_t* gh;                    // [B, G*H]: the step's recurrent products
  acc_t* projected;             // [B, P]: the projected h (LSTM projection)
  scalar_t* step_operand;       // [B, H]: r * h (reset-before GRU) or the unprojected output
  scalar_t* out;                // [N, P], the caller's layout
  scalar_t* h;                  // [B, P]
  acc_t* c;                     // [B, H] or null
  scalar_t* sv;                 // [N, S*H] or null
  const acc_t* input_bias;      // [G*H] or null
  const acc_t* recurrent_bias;  // [G*H] or null

  // Row b of step t's input projection [G*H].
  const acc_t* gx_row(int64_t t, int64_t b) const {
    const int64_t row = one_chunk ? layer.seq.row(t, b) : (t - chunk_t0) * layer.sizes.B + b;
    return gx + row * layer.GH;
  }

  // Reset-before GRU, step t, rows [b0, b1), units [j0, j1): r * h into step_operand.
  void reset(int64_t t, int64_t b0, int64_t b1, int64_t j0, int64_t j1) const {
    if constexpr (Cell::kResetBefore) {
      const int64_t H = layer.sizes.H, P = layer.sizes.P, GH = layer.GH;
      for_each_row(b0, b1, j1 - j0, [&](int64_t b) {
        if (!layer.active(t, b)) return;
        const acc_t* gx_r_row = gx_row(t, b);
        for_each_chunk<scalar_t>(j1 - j0, [&](int64_t k, int64_t n) {
          const int64_t j = j0 + k;
          V gx_r = load(gx_r_row + j, n);
          if (input_bias) gx_r = gx_r + load(input_bias + j, n);
          store(step_operand + b * H + j,
                Cell::reset_forward(gx_r, load(gh + b * GH + j, n), load(h + b * P + j, n)), n);
        });
      });
    }
  }

  // Step t's cell math for rows [b0, b1) and units [j0, j1), once gh holds their recurrent
  // products.
  void gates(int64_t t, int64_t b0, int64_t b1, int64_t j0, int64_t j1) const {
    const int64_t H = layer.sizes.H, P = layer.sizes.P, GH = layer.GH;
    const bool projection = layer.projection;
    // Locals, not members: the vector stores may alias any memory, so members would be read
    // again after each store.
    const acc_t *const gh = this->gh, *const input_bias = this->input_bias,
                       *const recurrent_bias = this->recurrent_bias;
    scalar_t *const h = this->h, *const out = this->out, *const sv = this->sv,
                    *const step_operand = this->step_operand;
    acc_t* const c = this->c;
    for_each_row(b0, b1, G * (j1 - j0), [&](int64_t b) {
      const int64_t row = layer.seq.row(t, b);
      if (!layer.active(t, b)) {
        // The output row's units (P wide where the units are all of them: the projection).
        zero_row(out + row * P + j0, (j1 == H ? P : j1) - j0);
        if (sv) {
          for (int k = 0; k < S; ++k) zero_row(sv + row * S * H + k * H + j0, j1 - j0);
        }
        return;
      }
      const acc_t* gx_row_b = gx_row(t, b);
      const acc_t* gh_row = gh + b * GH;
      scalar_t* h_row = h + b * P;
      scalar_t* out_row = out + row * P;
      scalar_t* saved_row = sv ? sv + row * S * H : nullptr;
      // One chunk of n elements, as a vector W (V, or VecPairOf for two full vectors).
      const auto chunk = [&](auto vector_type, int64_t j, int64_t n) {
        using W = decltype(vector_type);
        const auto ld = [n](const auto* p) {
          if constexpr (std::is_same_v<W, V>) {
            return load(p, n);
          } else {
            return load_pair(p);
          }
        };
        W vgx[G], vgh[G], vsaved[kSavedSlots];
        for (int g = 0; g < G; ++g) {
          vgx[g] = ld(gx_row_b + g * H + j);
          vgh[g] = ld(gh_row + g * H + j);
          if (input_bias) vgx[g] = vgx[g] + ld(input_bias + g * H + j);
          if (recurrent_bias) vgh[g] = vgh[g] + ld(recurrent_bias + g * H + j);
        }
        const W h_prev = Cell::kHasCellState ? W(0) : ld(h_row + j);
        const W c_prev = Cell::kHasCellState ? ld(c + b * H + j) : W(0);
        W h_out, c_out;
        Cell::forward(vgx, vgh, h_prev, c_prev, h_out, c_out, vsaved);
        if (saved_row) {
          for (int k = 0; k < S; ++k) store(saved_row + k * H + j, vsaved[k], n);
        }
        if constexpr (Cell::kHasCellState) store(c + b * H + j, c_out, n);
        if (projection) {
          store(step_operand + b * H + j, h_out, n);
        } else {
          store(h_row + j, h_out, n);
          store(out_row + j, h_out, n);
        }
      };
      for_each_chunk_pair<scalar_t>(
          j1 - j0, [&](int64_t k) { chunk(VecPairOf<scalar_t>{}, j0 + k, 2 * V::size()); },
          [&](int64_t k, int64_t n) { chunk(V{}, j0 + k, n); });
    });
  }

  // Step t's h (and output row) from the projected products, for rows [b0, b1).
  void projected_output(int64_t t, int64_t b0, int64_t b1) const {
    const int64_t P = layer.sizes.P;
    for_each_row(b0, b1, P, [&](int64_t b) {
      if (!layer.active(t, b)) return;
      for (int64_t j = 0; j < P; ++j) {
        const scalar_t v = static_cast<scalar_t>(projected[b * P + j]);
        h[b * P + j] = v;
        out[layer.seq.row(t, b) * P + j] = v;
      }
    });
  }
};

// The reverse loop's pointwise passes. Rows of the chunk buffers (dgx, dgh, hp, rh, um, dproj)
// start at `first_row` (= (t - the chunk's first t) * B); out, g_out and sv hold all T steps
// in the caller's layout.
template <class Cell, class scalar_t>
struct BackwardRows {
  using acc_t = at::opmath_type<scalar_t>;
  using V = VecOf<scalar_t>;
  static constexpr int G = Cell::kGates;
  static constexpr int S = Cell::kSaved;
  static constexpr int kSavedSlots = S > 0 ? S : 1;
  static constexpr int kRecurrentBiasFrom = Cell::kRecurrentBiasFrom;

  const Recurrence<Cell, scalar_t>& layer;
  int64_t SH;                   // (G - kRecurrentBiasFrom) * H
  StridedRows<scalar_t> g_out;  // grad_output, or null data
  const scalar_t* out;          // [N, P]
  const scalar_t* sv;           // [N, S*H] or null
  const scalar_t* h0;           // [B, P]
  scalar_t* dgx;                // [R, G*H]: d(gates), input side
  scalar_t* dgh;                // [R, SH]: d(gates from kRecurrentBiasFrom), recurrent side
  scalar_t* hp;                 // [R, P]: h_prev, or null where read in place
  scalar_t* rh;                 // [R, H]: r * h_prev (reset-before GRU)
  scalar_t* um;                 // [R, H]: unprojected output (LSTM projection)
  scalar_t* dproj;              // [R, P]: d(projected output)
  acc_t* dh;                    // [B, P]
  acc_t* dc;                    // [B, H]
  acc_t* d_step_operand;        // [B, H]: d(r * h) or d(unprojected output)

  // dh += grad_output[t], kept per step in dproj for d(weight_hr) (LSTM projection).
  void projected_gradient(int64_t t, int64_t first_row, int64_t b0, int64_t b1) const {
    const int64_t P = layer.sizes.P;
    for_each_row(b0, b1, P, [&](int64_t b) {
      const int64_t local = first_row + b;
      if (!layer.active(t, b)) {
        zero_row(dproj + local * P, P);
        return;
      }
      for (int64_t j = 0; j < P; ++j) {
        if (g_out.data) dh[b * P + j] += static_cast<acc_t>(g_out.row(t, b)[j]);
        dproj[local * P + j] = static_cast<scalar_t>(dh[b * P + j]);
      }
    });
  }

  // The gates' gradients of step t for rows [b0, b1), and the cell's share of dh_prev, dc_prev.
  void gates(int64_t t, int64_t first_row, int64_t b0, int64_t b1) const {
    const int64_t H = layer.sizes.H, P = layer.sizes.P, GH = layer.GH;
    for_each_row(b0, b1, GH, [&](int64_t b) {
      const int64_t local = first_row + b;
      if (layer.active(t, b)) {
        gate_row(t, local, b);
      } else {
        zero_row(dgx + local * GH, GH);
        if (SH > 0) zero_row(dgh + local * SH, SH);
        if (hp) zero_row(hp + local * P, P);
        if (Cell::kResetBefore) zero_row(rh + local * H, H);
        if (layer.projection) zero_row(um + local * H, H);
      }
    });
  }

  // Reset-before GRU: r's gradient and r's share of dh_prev, once d_step_operand holds
  // d(r * h_prev).
  void reset(int64_t t, int64_t first_row, int64_t b0, int64_t b1) const {
    const int64_t H = layer.sizes.H, P = layer.sizes.P, GH = layer.GH;
    for_each_row(b0, b1, H, [&](int64_t b) {
      const int64_t row = layer.seq.row(t, b), local = first_row + b;
      if (!layer.active(t, b)) return;
      for_each_chunk<scalar_t>(H, [&](int64_t j, int64_t n) {
        const V r = load(sv + row * S * H + j, n);
        const V h_prev = load(layer.h_prev_of(t, b, out, h0) + j, n);
        V dh_prev = load(dh + b * P + j, n);
        const V dr_pre =
            Cell::reset_backward(r, h_prev, load(d_step_operand + b * H + j, n), dh_prev);
        store(dh + b * P + j, dh_prev, n);
        store(dgx + local * GH + j, dr_pre, n);
        store(rh + local * H + j, r * h_prev, n);
      });
    });
  }

 private:
  // gates() for the active row b of step t, at chunk row `local`.
  void gate_row(int64_t t, int64_t local, int64_t b) const {
    const int64_t H = layer.sizes.H, P = layer.sizes.P, GH = layer.GH, SH = this->SH;
    const bool projection = layer.projection;
    // Locals, not members: the vector stores may alias any memory (as in ForwardRows::gates).
    scalar_t *const dgx = this->dgx, *const dgh = this->dgh, *const um = this->um;
    acc_t *const dh = this->dh, *const dc = this->dc, *const d_step_operand = this->d_step_operand;
    const int64_t row = layer.seq.row(t, b);
    const scalar_t* h_prev_row = layer.h_prev_of(t, b, out, h0);
    if (hp) std::copy(h_prev_row, h_prev_row + P, hp + local * P);
    const scalar_t* out_row = out + row * P;
    const scalar_t* g_out_row = g_out.data ? g_out.row(t, b) : nullptr;
    const scalar_t* saved_row = sv ? sv + row * S * H : nullptr;
    for_each_chunk<scalar_t>(H, [&](int64_t j, int64_t n) {
      V vsaved[kSavedSlots], vdgx[G], vdgh[G];
      for (int k = 0; k < S; ++k) vsaved[k] = load(saved_row + k * H + j, n);
      // The gradient w.r.t. this step's (unprojected) output.
      V d_out = projection ? load(d_step_operand + b * H + j, n) : load(dh + b * P + j, n);
      if (!projection && g_out_row) d_out = d_out + load(g_out_row + j, n);
      const V dc_out = Cell::kHasCellState ? load(dc + b * H + j, n) : V(0);
      // The LSTM reads neither (its output may be projected to another size).
      const V h_prev = Cell::kHasCellState ? V(0) : load(h_prev_row + j, n);
      const V h_out = Cell::kHasCellState ? V(0) : load(out_row + j, n);
      V dh_prev, dc_prev;
      Cell::backward(vsaved, h_prev, h_out, d_out, dc_out, vdgx, vdgh, dh_prev, dc_prev);
      for (int g = 0; g < G; ++g) {
        store(dgx + local * GH + g * H + j, vdgx[g], n);
        if (g >= kRecurrentBiasFrom) {
          store(dgh + local * SH + (g - kRecurrentBiasFrom) * H + j, vdgh[g], n);
        }
      }
      if (!projection) store(dh + b * P + j, dh_prev, n);
      if constexpr (Cell::kHasCellState) {
        store(dc + b * H + j, dc_prev, n);
        if (projection) store(um + local * H + j, Cell::unprojected_output(vsaved), n);
      }
    });
    // With the projection, all of dh_prev goes through W_hh.
    if (projection) zero_row(dh + b * P, P);
  }
};

}  // namespace rnnfast::cpu
