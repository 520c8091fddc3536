// The cells' pointwise math, forward and backward, written once for every backend.
//
// Every function is a template on the value type V: a scalar (float or double, on the host
// or on a CUDA device) or a CPU SIMD vector (at::vec::Vectorized<T>, see cpu/vec_math.h).
// Transcendentals go through Math<V>, specialised per value type, so the same source gives
// scalar device code and vectorised host code.
//
// Conventions for one time step and one hidden unit j (arrays are indexed by gate):
//   gx[g]  input projection  (W_ih x + folded biases) of gate g
//   gh[g]  recurrent product (W_hh h, plus the b_hh of gates >= kRecurrentBiasFrom)
//   h, c   the state before the step; h_out, c_out the state after it
//   saved  what the step keeps for backward (kSaved values)
// Backward gets dh (gradient w.r.t. h_out) and dc (w.r.t. c_out) and returns the gradients
// of the gate pre-activations on the input side (dgx) and on the recurrent side (dgh), and
// the parts of dh_prev / dc_prev that do not go through W_hh. The two sides differ only for
// gates from kRecurrentBiasFrom on (those whose b_hh stays inside the cell), so dgh is set
// only for them.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define RF_HD __host__ __device__ __forceinline__
#else
#define RF_HD inline
#endif

namespace rnnfast {

template <class V>
struct Math;

template <>
struct Math<float> {
  static RF_HD float tanh(float x) { return ::tanhf(x); }
  static RF_HD float sigmoid(float x) { return 1.f / (1.f + ::expf(-x)); }
  static RF_HD float relu(float x) { return x < 0.f ? 0.f : x; }
  static RF_HD float positive(float y) { return y > 0.f ? 1.f : 0.f; }
};

template <>
struct Math<double> {
  static RF_HD double tanh(double x) { return ::tanh(x); }
  static RF_HD double sigmoid(double x) { return 1.0 / (1.0 + ::exp(-x)); }
  static RF_HD double relu(double x) { return x < 0.0 ? 0.0 : x; }
  static RF_HD double positive(double y) { return y > 0.0 ? 1.0 : 0.0; }
};

template <class V>
RF_HD V sigmoid(V x) {
  return Math<V>::sigmoid(x);
}

enum class Act { Tanh, Relu };

template <Act A, class V>
RF_HD V activate(V x) {
  if constexpr (A == Act::Tanh) {
    return Math<V>::tanh(x);
  } else {
    return Math<V>::relu(x);
  }
}

// Derivative of the activation, expressed through its output y = act(x).
template <Act A, class V>
RF_HD V activation_grad(V y) {
  if constexpr (A == Act::Tanh) {
    return V(1) - y * y;
  } else {
    return Math<V>::positive(y);
  }
}

// Elman cell, h' = act(gx + gh), or with kResidual h' = h + act(gx + gh) (NNDL eq. 6.50).
template <Act A, bool kResidual>
struct SrnCell {
  static constexpr int kGates = 1;
  // The plain cell reads act from h' in backward; the residual one must keep it.
  static constexpr int kSaved = kResidual ? 1 : 0;
  static constexpr int kRecurrentBiasFrom = 1;  // all of b_hh folds into the input side
  static constexpr bool kResetBefore = false;
  static constexpr bool kHasCellState = false;

  template <class V>
  static RF_HD void forward(const V* gx, const V* gh, V h, V /*c*/, V& h_out, V& /*c_out*/,
                            V* saved) {
    const V a = activate<A>(gx[0] + gh[0]);
    if constexpr (kResidual) {
      saved[0] = a;
      h_out = h + a;
    } else {
      h_out = a;
    }
  }

  template <class V>
  static RF_HD void backward(const V* saved, V /*h_prev*/, V h_out, V dh, V /*dc*/, V* dgx,
                             V* /*dgh*/, V& dh_prev, V& /*dc_prev*/) {
    V a;
    if constexpr (kResidual) {
      a = saved[0];
      dh_prev = dh;
    } else {
      a = h_out;
      dh_prev = V(0);
    }
    dgx[0] = dh * activation_grad<A>(a);
  }
};

// GRU, gates (r, z, n), h' = (1 - z) * n + z * h.
//   reset after  (torch.nn, cuDNN):  n = tanh(gx_n + r * (W_hn h + b_hn))
//   reset before (Cho 2014, d2l):    n = tanh(gx_n + W_hn (r * h) + b_hn)
// The reset-before cell needs r before the n part of the recurrent product can be formed:
// the engine runs reset_forward, multiplies r*h by W_hn into gh[2], then runs forward.
template <bool kResetAfter>
struct GruCell {
  static constexpr int kGates = 3;
  // r, z, n, and for reset-after the recurrent n product that r scaled.
  static constexpr int kSaved = kResetAfter ? 4 : 3;
  static constexpr int kRecurrentBiasFrom = kResetAfter ? 2 : 3;
  static constexpr bool kResetBefore = !kResetAfter;
  static constexpr bool kHasCellState = false;

  // Reset-before only: the reset-scaled state r * h that W_hn multiplies.
  template <class V>
  static RF_HD V reset_forward(V gx_r, V gh_r, V h) {
    return sigmoid(gx_r + gh_r) * h;
  }

  template <class V>
  static RF_HD void forward(const V* gx, const V* gh, V h, V /*c*/, V& h_out, V& /*c_out*/,
                            V* saved) {
    const V r = sigmoid(gx[0] + gh[0]);
    const V z = sigmoid(gx[1] + gh[1]);
    V n;
    if constexpr (kResetAfter) {
      n = Math<V>::tanh(gx[2] + r * gh[2]);
      saved[3] = gh[2];
    } else {
      n = Math<V>::tanh(gx[2] + gh[2]);
    }
    saved[0] = r;
    saved[1] = z;
    saved[2] = n;
    h_out = n + z * (h - n);
  }

  // For reset-before, dgx[0] is left to reset_backward.
  template <class V>
  static RF_HD void backward(const V* saved, V h_prev, V /*h_out*/, V dh, V /*dc*/, V* dgx, V* dgh,
                             V& dh_prev, V& /*dc_prev*/) {
    const V r = saved[0];
    const V z = saved[1];
    const V n = saved[2];
    const V dn_pre = dh * (V(1) - z) * (V(1) - n * n);
    const V dz_pre = dh * (h_prev - n) * z * (V(1) - z);
    dgx[1] = dz_pre;
    dgx[2] = dn_pre;
    if constexpr (kResetAfter) {
      dgx[0] = dn_pre * saved[3] * r * (V(1) - r);
      dgh[2] = dn_pre * r;
    }
    dh_prev = dh * z;
  }

  // Reset-before only: d_rh = W_hn^T dn_pre is the gradient w.r.t. r * h_prev.
  // Returns the r pre-activation gradient and adds r's share to dh_prev.
  template <class V>
  static RF_HD V reset_backward(V r, V h_prev, V d_rh, V& dh_prev) {
    dh_prev = dh_prev + d_rh * r;
    return d_rh * h_prev * r * (V(1) - r);
  }
};

// LSTM, gates (i, f, g, o): c' = f * c + i * g, h' = o * tanh(c') (before the optional
// projection, which the engine applies as a GEMM).
struct LstmCell {
  static constexpr int kGates = 4;
  static constexpr int kSaved = 5;  // i, f, g, o and c_prev; c' and tanh(c') are recomputed
  static constexpr int kRecurrentBiasFrom = 4;
  static constexpr bool kResetBefore = false;
  static constexpr bool kHasCellState = true;

  template <class V>
  static RF_HD void forward(const V* gx, const V* gh, V /*h*/, V c, V& h_out, V& c_out, V* saved) {
    const V i = sigmoid(gx[0] + gh[0]);
    const V f = sigmoid(gx[1] + gh[1]);
    const V g = Math<V>::tanh(gx[2] + gh[2]);
    const V o = sigmoid(gx[3] + gh[3]);
    c_out = f * c + i * g;
    h_out = o * Math<V>::tanh(c_out);
    saved[0] = i;
    saved[1] = f;
    saved[2] = g;
    saved[3] = o;
    saved[4] = c;
  }

  // The unprojected output o * tanh(c'), rebuilt from what forward saved.
  template <class V>
  static RF_HD V unprojected_output(const V* saved) {
    return saved[3] * Math<V>::tanh(saved[1] * saved[4] + saved[0] * saved[2]);
  }

  template <class V>
  static RF_HD void backward(const V* saved, V /*h_prev*/, V /*h_out*/, V dh, V dc, V* dgx,
                             V* /*dgh*/, V& dh_prev, V& dc_prev) {
    const V i = saved[0];
    const V f = saved[1];
    const V g = saved[2];
    const V o = saved[3];
    const V c_prev = saved[4];
    const V tanh_c = Math<V>::tanh(f * c_prev + i * g);
    const V dc_total = dc + dh * o * (V(1) - tanh_c * tanh_c);
    dgx[0] = dc_total * g * i * (V(1) - i);
    dgx[1] = dc_total * c_prev * f * (V(1) - f);
    dgx[2] = dc_total * i * (V(1) - g * g);
    dgx[3] = dh * tanh_c * o * (V(1) - o);
    dh_prev = V(0);
    dc_prev = dc_total * f;
  }
};

}  // namespace rnnfast
