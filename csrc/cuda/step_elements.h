// The per-element bodies of the CUDA engine's pointwise passes: element e of one pass of
// step t, for e in [0, B*H) (or [0, B*P) for the projection passes). The kernels
// (recurrence_kernels.cu) run them one thread per element in grid-stride loops; the host
// emulation (on_host/) runs the same code in a plain loop, so the tests check it on the
// CPU. No element reads what another element of the same pass writes.
//
// Cell math from cells.h; values converted to the compute type (acc) on load and rounded to
// the storage type on store through Storage<T>, which the CUDA and host builds specialise
// for their 16-bit types. 64-bit index math throughout. Arguments and layouts: step_args.h.
#pragma once

#include <cstdint>

#include "../cells.h"
#include "step_args.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace rnnfast::cuda {

// Storage<T>: Acc, the compute type of T; load(x) to Acc; store(p, v) rounds v to T.
template <class T>
struct Storage;

template <>
struct Storage<float> {
  using Acc = float;
  static RF_HD float load(float x) { return x; }
  static RF_HD void store(float* p, float v) { *p = v; }
};

template <>
struct Storage<double> {
  using Acc = double;
  static RF_HD double load(double x) { return x; }
  static RF_HD void store(double* p, double v) { *p = v; }
};

#if defined(__CUDACC__)
// torch builds with __CUDA_NO_HALF_CONVERSIONS__ (and the bf16 one): convert explicitly.
template <>
struct Storage<__half> {
  using Acc = float;
  static RF_HD float load(__half x) { return __half2float(x); }
  static RF_HD void store(__half* p, float v) { *p = __float2half_rn(v); }
};

template <>
struct Storage<__nv_bfloat16> {
  using Acc = float;
  static RF_HD float load(__nv_bfloat16 x) { return __bfloat162float(x); }
  static RF_HD void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
};
#endif

template <class T>
RF_HD typename Storage<T>::Acc to_acc(T x) {
  return Storage<T>::load(x);
}

template <class T>
RF_HD void store(T* p, typename Storage<T>::Acc v) {
  Storage<T>::store(p, v);
}

RF_HD int64_t row_of(const StepGeometry& geo, int64_t t, int64_t b) {
  return geo.batch_first ? b * geo.T + t : t * geo.B + b;
}

RF_HD bool active(const StepGeometry& geo, int64_t t, int64_t b) {
  return geo.lengths == nullptr || t < geo.lengths[b];
}

// Whether step t is the first that sequence b processes (its state then comes from h0).
RF_HD bool first_step(const StepGeometry& geo, int64_t t, int64_t b) {
  if (!geo.reverse) return t == 0;
  return t == (geo.lengths ? geo.lengths[b] : geo.T) - 1;
}

// e in [0, B*H); shapes in ForwardStep.
template <class Cell, class T>
RF_HD void forward_step_element(const StepGeometry& geo, int64_t t, const ForwardStep& args,
                                int64_t e) {
  using A = typename Storage<T>::Acc;
  constexpr int G = Cell::kGates;
  constexpr int S = Cell::kSaved;
  const int64_t H = geo.H, P = geo.P, GH = G * H;
  const A* gx = static_cast<const A*>(args.gx);
  const A* gh = static_cast<const A*>(args.gh);
  const A* input_bias = static_cast<const A*>(args.input_bias);
  const A* recurrent_bias = static_cast<const A*>(args.recurrent_bias);
  T* h = static_cast<T*>(args.h);
  A* c = static_cast<A*>(args.c);
  T* output = static_cast<T*>(args.output);
  T* saved = static_cast<T*>(args.saved);
  T* unprojected = static_cast<T*>(args.unprojected);
  const int64_t b = e / H, j = e % H;
  const int64_t row = row_of(geo, t, b);
  if (!active(geo, t, b)) {
    // Past the sequence's end: zero output (P wide, so stride H over it), state kept.
    for (int64_t k = j; k < P; k += H) store(output + row * P + k, A(0));
    if (saved) {
      for (int k = 0; k < S; ++k) store(saved + row * S * H + k * H + j, A(0));
    }
    // The projection GEMM multiplies every row; keep this one's input initialised.
    if (unprojected) store(unprojected + b * H + j, A(0));
    return;
  }
  A vgx[G], vgh[G], vsaved[S > 0 ? S : 1];
  for (int g = 0; g < G; ++g) {
    vgx[g] = gx[row * GH + g * H + j];
    vgh[g] = gh[b * GH + g * H + j];
    if (input_bias) vgx[g] = vgx[g] + input_bias[g * H + j];
    if (recurrent_bias) vgh[g] = vgh[g] + recurrent_bias[g * H + j];
  }
  const A h_prev = Cell::kHasCellState ? A(0) : to_acc(h[b * P + j]);
  const A c_prev = Cell::kHasCellState ? c[b * H + j] : A(0);
  A h_out, c_out;
  Cell::forward(vgx, vgh, h_prev, c_prev, h_out, c_out, vsaved);
  if (saved) {
    for (int k = 0; k < S; ++k) store(saved + row * S * H + k * H + j, vsaved[k]);
  }
  if constexpr (Cell::kHasCellState) c[b * H + j] = c_out;
  if (unprojected) {
    store(unprojected + b * H + j, h_out);
  } else {
    store(h + b * P + j, h_out);
    store(output + row * P + j, h_out);
  }
}

// e in [0, B*H). reset_h [B, H] scalar.
template <class Cell, class T>
RF_HD void reset_forward_element(const StepGeometry& geo, int64_t t, const ForwardStep& args,
                                 T* reset_h, int64_t e) {
  using A = typename Storage<T>::Acc;
  const int64_t H = geo.H, P = geo.P, GH = Cell::kGates * H;
  const A* gx = static_cast<const A*>(args.gx);
  const A* gh = static_cast<const A*>(args.gh);
  const A* input_bias = static_cast<const A*>(args.input_bias);
  const T* h = static_cast<const T*>(args.h);
  const int64_t b = e / H, j = e % H;
  if (!active(geo, t, b)) {
    store(reset_h + b * H + j, A(0));  // its product row is never read; keep it finite
    return;
  }
  A gx_r = gx[row_of(geo, t, b) * GH + j];
  if (input_bias) gx_r = gx_r + input_bias[j];
  store(reset_h + b * H + j, Cell::reset_forward(gx_r, gh[b * GH + j], to_acc(h[b * P + j])));
}

// e in [0, B*P). projected acc [B, P]; h scalar [B, P]; output scalar [N, P].
template <class T>
RF_HD void store_projection_element(const StepGeometry& geo, int64_t t,
                                    const typename Storage<T>::Acc* projected, T* h, T* output,
                                    int64_t e) {
  const int64_t P = geo.P;
  const int64_t b = e / P, k = e % P;
  if (!active(geo, t, b)) return;
  store(h + b * P + k, projected[e]);
  output[row_of(geo, t, b) * P + k] = h[b * P + k];
}

// e in [0, B*P). grad_output scalar [N, P] or null; dh acc [B, P]; d_projected scalar [N, P].
template <class T>
RF_HD void projection_grad_element(const StepGeometry& geo, int64_t t, const T* grad_output,
                                   typename Storage<T>::Acc* dh, T* d_projected, int64_t e) {
  using A = typename Storage<T>::Acc;
  const int64_t P = geo.P;
  const int64_t b = e / P, k = e % P;
  const int64_t row = row_of(geo, t, b);
  if (!active(geo, t, b)) {
    store(d_projected + row * P + k, A(0));
    return;
  }
  if (grad_output) dh[e] = dh[e] + to_acc(grad_output[row * P + k]);
  store(d_projected + row * P + k, dh[e]);
}

// e in [0, B*H); shapes in BackwardStep.
template <class Cell, class T>
RF_HD void backward_step_element(const StepGeometry& geo, int64_t t, const BackwardStep& args,
                                 int64_t e) {
  using A = typename Storage<T>::Acc;
  constexpr int G = Cell::kGates;
  constexpr int S = Cell::kSaved;
  constexpr int kRecurrentBiasFrom = Cell::kRecurrentBiasFrom;
  const int64_t H = geo.H, P = geo.P, GH = G * H, SH = (G - kRecurrentBiasFrom) * H;
  const bool projection = args.d_unprojected != nullptr;
  const T* grad_output = static_cast<const T*>(args.grad_output);
  const T* output = static_cast<const T*>(args.output);
  const T* saved = static_cast<const T*>(args.saved);
  const T* h0 = static_cast<const T*>(args.h0);
  const A* d_unprojected = static_cast<const A*>(args.d_unprojected);
  A* dh = static_cast<A*>(args.dh);
  A* dc = static_cast<A*>(args.dc);
  T* d_gates_x = static_cast<T*>(args.d_gates_x);
  T* d_gates_h = static_cast<T*>(args.d_gates_h);
  T* d_recurrent = static_cast<T*>(args.d_recurrent);
  T* h_prev_out = static_cast<T*>(args.h_prev);
  T* unprojected = static_cast<T*>(args.unprojected);
  T* reset_h = static_cast<T*>(args.reset_h);
  const int64_t b = e / H, j = e % H;
  const int64_t row = row_of(geo, t, b);
  if (!active(geo, t, b)) {
    // Zero rows contribute nothing to the weight-gradient GEMMs; dh and dc pass unchanged.
    for (int64_t k = j; k < GH; k += H) store(d_gates_x + row * GH + k, A(0));
    for (int64_t k = j; k < SH; k += H) store(d_gates_h + row * SH + k, A(0));
    if (d_recurrent) {  // its product with W_hh must add nothing to dh
      for (int64_t k = j; k < GH; k += H) store(d_recurrent + b * GH + k, A(0));
    }
    for (int64_t k = j; k < P; k += H) store(h_prev_out + row * P + k, A(0));
    if (reset_h) store(reset_h + row * H + j, A(0));
    if (unprojected) store(unprojected + row * H + j, A(0));
    return;
  }
  const T* h_prev_row =
      first_step(geo, t, b) ? h0 + b * P : output + row_of(geo, geo.reverse ? t + 1 : t - 1, b) * P;
  for (int64_t k = j; k < P; k += H) h_prev_out[row * P + k] = h_prev_row[k];
  A vsaved[S > 0 ? S : 1], vdgx[G], vdgh[G];
  for (int k = 0; k < S; ++k) vsaved[k] = to_acc(saved[row * S * H + k * H + j]);
  for (int g = 0; g < G; ++g) vdgx[g] = vdgh[g] = A(0);
  // The gradient w.r.t. this step's (unprojected) output.
  A d_out = projection ? d_unprojected[b * H + j] : dh[b * P + j];
  if (!projection && grad_output) d_out = d_out + to_acc(grad_output[row * P + j]);
  const A dc_out = Cell::kHasCellState ? dc[b * H + j] : A(0);
  // The LSTM reads neither (its output may be projected to another size).
  const A h_prev = Cell::kHasCellState ? A(0) : to_acc(h_prev_row[j]);
  const A h_out = Cell::kHasCellState ? A(0) : to_acc(output[row * P + j]);
  A dh_prev, dc_prev;
  Cell::backward(vsaved, h_prev, h_out, d_out, dc_out, vdgx, vdgh, dh_prev, dc_prev);
  for (int g = 0; g < G; ++g) {
    store(d_gates_x + row * GH + g * H + j, vdgx[g]);
    if (g >= kRecurrentBiasFrom) {
      store(d_gates_h + row * SH + (g - kRecurrentBiasFrom) * H + j, vdgh[g]);
    }
    // Before kRecurrentBiasFrom the recurrent and input sides share one pre-activation and
    // gradient.
    if (d_recurrent) {
      store(d_recurrent + b * GH + g * H + j, g >= kRecurrentBiasFrom ? vdgh[g] : vdgx[g]);
    }
  }
  if constexpr (Cell::kHasCellState) {
    dc[b * H + j] = dc_prev;
    if (unprojected) store(unprojected + row * H + j, Cell::unprojected_output(vsaved));
  }
  if (projection) {
    // All of dh_prev then goes through W_hh; this element owns columns j, j + H, ...
    for (int64_t k = j; k < P; k += H) dh[b * P + k] = A(0);
  } else {
    dh[b * P + j] = dh_prev;
  }
}

// e in [0, B*H). d_rh acc [B, H].
template <class Cell, class T>
RF_HD void reset_backward_element(const StepGeometry& geo, int64_t t, const BackwardStep& args,
                                  const typename Storage<T>::Acc* d_rh, int64_t e) {
  using A = typename Storage<T>::Acc;
  const int64_t H = geo.H, P = geo.P, GH = Cell::kGates * H, SH = Cell::kSaved * H;
  const T* saved = static_cast<const T*>(args.saved);
  const T* h_prevs = static_cast<const T*>(args.h_prev);
  A* dh = static_cast<A*>(args.dh);
  T* d_gates_x = static_cast<T*>(args.d_gates_x);
  T* reset_h = static_cast<T*>(args.reset_h);
  const int64_t b = e / H, j = e % H;
  const int64_t row = row_of(geo, t, b);
  if (!active(geo, t, b)) return;
  const A r = to_acc(saved[row * SH + j]);
  const A h_prev = to_acc(h_prevs[row * P + j]);
  A dh_prev = dh[b * P + j];
  const A dr_pre = Cell::reset_backward(r, h_prev, d_rh[b * H + j], dh_prev);
  dh[b * P + j] = dh_prev;
  store(d_gates_x + row * GH + j, dr_pre);
  store(reset_h + row * H + j, r * h_prev);
}

}  // namespace rnnfast::cuda
