// The pointwise kernels of the CUDA recurrence engine, behind launchers free of torch types:
// raw device pointers, sizes and a stream. The engine (recurrence_engine.h) runs the step
// loop, the GEMMs and the allocation; each launcher runs one fused pointwise pass of one step,
// one thread per element of step_elements.h. Arguments and layouts: step_args.h.
// Every launcher returns the launch's error (cudaSuccess when all went well).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../cell_registry.h"
#include "step_args.h"

namespace rnnfast::cuda {

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
