// The arguments of the CUDA engine's per-step pointwise passes, free of CUDA and torch types,
// so that the engine's step loop and the passes' element code also build for the host
// (on_host/, which runs them on the CPU in the tests).
//
// Element types: the per-step tensors (input, output, h, saved, gradients) hold `scalar`
// values (float, double, half or bfloat16); the GEMM results, biases and running sums (gx,
// gh, c, dh, dc, ...) hold `acc` values: double for double, float otherwise.
// Rows of per-step tensors ([N = T*B, X]) are in the caller's layout: row(t, b) is
// t * B + b, or b * T + t when batch_first.
#pragma once

#include <cstdint>

namespace rnnfast::cuda {

enum class ElementType { Float, Double, Half, BFloat16 };

template <class T>
struct Tag {
  using type = T;
};

// f(Tag<T>{}) for the storage type T of `type`. Half and BFloat16 are the build's 16-bit
// types: CUDA's in the kernels, c10's in the host build.
template <class Half, class BFloat16, class F>
decltype(auto) dispatch_element_type(ElementType type, F&& f) {
  switch (type) {
    case ElementType::Float:
      return f(Tag<float>{});
    case ElementType::Double:
      return f(Tag<double>{});
    case ElementType::Half:
      return f(Tag<Half>{});
    case ElementType::BFloat16:
    default:
      return f(Tag<BFloat16>{});
  }
}

// One layer in one direction.
struct StepGeometry {
  int64_t T, B, H, P;
  bool batch_first;
  bool reverse;
  // [B] int64 on the device, each in [0, T], or nullptr: every sequence has T steps.
  const int64_t* lengths;
};

struct ForwardStep {
  const void* gx;              // acc [N, G*H]: input projection W_ih x, without biases
  const void* gh;              // acc [B, G*H]: recurrent product W_hh h of this step
  const void* input_bias;      // acc [G*H] or nullptr: b_ih plus the b_hh folded in
  const void* recurrent_bias;  // acc [G*H] or nullptr: the b_hh kept inside the cell
  void* h;                     // scalar [B, P]: the state, updated in place (not projected)
  void* c;                     // acc [B, H] or nullptr: the LSTM cell state, updated
  void* output;                // scalar [N, P]
  void* saved;                 // scalar [N, S*H] or nullptr: what backward reads
  void* unprojected;           // scalar [B, H] or nullptr: with the LSTM projection, the
                               // output before W_hr (h and output are then left alone)
};

struct BackwardStep {
  const void* grad_output;    // scalar [N, P] or nullptr (zero)
  const void* output;         // scalar [N, P]: the forward's output
  const void* saved;          // scalar [N, S*H] or nullptr (S = 0)
  const void* h0;             // scalar [B, P]: the initial state
  const void* d_unprojected;  // acc [B, H] or nullptr: d(o * tanh(c')) with the projection
  void* dh;                   // acc [B, P]: running gradient w.r.t. h, updated in place
  void* dc;                   // acc [B, H] or nullptr: running gradient w.r.t. c, updated
  void* d_gates_x;            // scalar [N, G*H]: gradient of the input-side pre-activations
  void* d_gates_h;            // scalar [N, (G - recurrent_bias_from)*H] or nullptr: the
                              // recurrent side of the gates that keep b_hh there
  void* d_recurrent;          // scalar [B, G*H] or nullptr (where d_gates_h is): this step's
                              // gradient of the W_hh product, all gates side by side, so one
                              // GEMM carries dh back a step
  void* h_prev;               // scalar [N, P]: the state each step started from
  void* unprojected;          // scalar [N, H] or nullptr: o * tanh(c') for d(W_hr)
  void* reset_h;              // scalar [N, H] or nullptr: r * h_prev (reset-before GRU)
};

}  // namespace rnnfast::cuda
