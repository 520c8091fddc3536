// The pointwise kernels of the CUDA recurrence engine, behind launchers free of torch types:
// raw device pointers, sizes and a stream. recurrence_cuda.cpp runs the step loop, the GEMMs
// and the allocation; these launchers run one fused pointwise pass of one step each.
//
// Element types: the per-step tensors (input, output, h, saved, gradients) hold `scalar`
// values (float, double, half or bfloat16); the GEMM results, biases and running sums (gx,
// gh, c, dh, dc, ...) hold `acc` values: double for double, float otherwise.
// Rows of per-step tensors ([N = T*B, X]) are in the caller's layout: row(t, b) is
// t * B + b, or b * T + t when batch_first.
// Every launcher returns the launch's error (cudaSuccess when all went well).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../cell_kind.h"

namespace rnnfast::cuda {

enum class ElementType { Float, Double, Half, BFloat16 };

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

// The forward pointwise pass of step t: gates from gx + gh, the cell, the new state.
cudaError_t launch_forward_step(CellKind kind, ElementType type, const StepGeometry& geo, int64_t t,
                                const ForwardStep& args, cudaStream_t stream);

// Reset-before GRU: reset_h [B, H] (scalar) = sigmoid(gx_r + b_r + gh_r) * h, the operand of
// W_hn. gx, gh, input_bias, h as in ForwardStep.
cudaError_t launch_reset_forward(CellKind kind, ElementType type, const StepGeometry& geo,
                                 int64_t t, const ForwardStep& args, void* reset_h,
                                 cudaStream_t stream);

// LSTM projection: h [B, P] and output row t (scalar) = projected [B, P] (acc), active rows.
cudaError_t launch_store_projection(ElementType type, const StepGeometry& geo, int64_t t,
                                    const void* projected, void* h, void* output,
                                    cudaStream_t stream);

struct BackwardStep {
  const void* grad_output;    // scalar [N, P] or nullptr (zero)
  const void* output;         // scalar [N, P]: the forward's output
  const void* saved;          // scalar [N, S*H] or nullptr (S = 0)
  const void* h0;             // scalar [B, P]: the initial state
  const void* d_unprojected;  // acc [B, H] or nullptr: d(o * tanh(c')) with the projection
  void* dh;                   // acc [B, P]: running gradient w.r.t. h, updated in place
  void* dc;                   // acc [B, H] or nullptr: running gradient w.r.t. c, updated
  void* d_gates_x;            // scalar [N, G*H]: gradient of the input-side pre-activations
  void* d_gates_h;            // scalar [N, (G - split)*H] or nullptr: the recurrent side
  void* h_prev;               // scalar [N, P]: the state each step started from
  void* unprojected;          // scalar [N, H] or nullptr: o * tanh(c') for d(W_hr)
  void* reset_h;              // scalar [N, H] or nullptr: r * h_prev (reset-before GRU)
};

// LSTM projection: dh += grad_output row t; d_projected row t (scalar) = dh; zero for
// inactive rows. dh acc [B, P], d_projected scalar [N, P].
cudaError_t launch_projection_grad(ElementType type, const StepGeometry& geo, int64_t t,
                                   const void* grad_output, void* dh, void* d_projected,
                                   cudaStream_t stream);

// The backward pointwise pass of step t (before the recurrent GEMMs that add to dh).
cudaError_t launch_backward_step(CellKind kind, ElementType type, const StepGeometry& geo,
                                 int64_t t, const BackwardStep& args, cudaStream_t stream);

// Reset-before GRU, after d_rh [B, H] (acc) = dn_pre W_hn: r's pre-activation gradient into
// d_gates_x, r's share of dh, and reset_h row t = r * h_prev.
cudaError_t launch_reset_backward(CellKind kind, ElementType type, const StepGeometry& geo,
                                  int64_t t, const BackwardStep& args, const void* d_rh,
                                  cudaStream_t stream);

}  // namespace rnnfast::cuda
