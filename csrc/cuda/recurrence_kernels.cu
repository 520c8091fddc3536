// The pointwise kernels of the CUDA recurrence engine: one thread per (batch row, hidden
// unit) in grid-stride loops, the cell math from cells.h, values converted to the compute
// type (acc) on load and rounded to the storage type on store. 64-bit index math throughout.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "../cells.h"
#include "recurrence_kernels.h"

namespace rnnfast::cuda {
namespace {

template <class T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};

// torch builds with __CUDA_NO_HALF_CONVERSIONS__ (and the bf16 one): convert explicitly.
__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

__device__ __forceinline__ int64_t row_of(const StepGeometry& geo, int64_t t, int64_t b) {
  return geo.batch_first ? b * geo.T + t : t * geo.B + b;
}

__device__ __forceinline__ bool active(const StepGeometry& geo, int64_t t, int64_t b) {
  return geo.lengths == nullptr || t < geo.lengths[b];
}

// Whether step t is the first that sequence b processes (its state then comes from h0).
__device__ __forceinline__ bool first_step(const StepGeometry& geo, int64_t t, int64_t b) {
  if (!geo.reverse) return t == 0;
  return t == (geo.lengths ? geo.lengths[b] : geo.T) - 1;
}

#define RF_GRID_STRIDE(e, n)                                                \
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < (n); \
       e += int64_t(gridDim.x) * blockDim.x)

// grid: B*H threads; shapes in ForwardStep.
template <class Cell, class T>
__global__ void forward_step_kernel(StepGeometry geo, int64_t t, ForwardStep args) {
  using A = typename AccOf<T>::type;
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
  RF_GRID_STRIDE(e, geo.B * H) {
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
      continue;
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
}

// grid: B*H threads. reset_h [B, H] scalar.
template <class Cell, class T>
__global__ void reset_forward_kernel(StepGeometry geo, int64_t t, ForwardStep args, T* reset_h) {
  using A = typename AccOf<T>::type;
  const int64_t H = geo.H, P = geo.P, GH = Cell::kGates * H;
  const A* gx = static_cast<const A*>(args.gx);
  const A* gh = static_cast<const A*>(args.gh);
  const A* input_bias = static_cast<const A*>(args.input_bias);
  const T* h = static_cast<const T*>(args.h);
  RF_GRID_STRIDE(e, geo.B * H) {
    const int64_t b = e / H, j = e % H;
    if (!active(geo, t, b)) {
      store(reset_h + b * H + j, A(0));  // its product row is never read; keep it finite
      continue;
    }
    A gx_r = gx[row_of(geo, t, b) * GH + j];
    if (input_bias) gx_r = gx_r + input_bias[j];
    store(reset_h + b * H + j, Cell::reset_forward(gx_r, gh[b * GH + j], to_acc(h[b * P + j])));
  }
}

// grid: B*P threads. projected acc [B, P]; h scalar [B, P]; output scalar [N, P].
template <class T>
__global__ void store_projection_kernel(StepGeometry geo, int64_t t,
                                        const typename AccOf<T>::type* projected, T* h, T* output) {
  const int64_t P = geo.P;
  RF_GRID_STRIDE(e, geo.B * P) {
    const int64_t b = e / P, k = e % P;
    if (!active(geo, t, b)) continue;
    store(h + b * P + k, projected[e]);
    output[row_of(geo, t, b) * P + k] = h[b * P + k];
  }
}

// grid: B*P threads. grad_output scalar [N, P] or null; dh acc [B, P]; d_projected scalar
// [N, P].
template <class T>
__global__ void projection_grad_kernel(StepGeometry geo, int64_t t, const T* grad_output,
                                       typename AccOf<T>::type* dh, T* d_projected) {
  using A = typename AccOf<T>::type;
  const int64_t P = geo.P;
  RF_GRID_STRIDE(e, geo.B * P) {
    const int64_t b = e / P, k = e % P;
    const int64_t row = row_of(geo, t, b);
    if (!active(geo, t, b)) {
      store(d_projected + row * P + k, A(0));
      continue;
    }
    if (grad_output) dh[e] = dh[e] + to_acc(grad_output[row * P + k]);
    store(d_projected + row * P + k, dh[e]);
  }
}

// grid: B*H threads; shapes in BackwardStep.
template <class Cell, class T>
__global__ void backward_step_kernel(StepGeometry geo, int64_t t, BackwardStep args) {
  using A = typename AccOf<T>::type;
  constexpr int G = Cell::kGates;
  constexpr int S = Cell::kSaved;
  constexpr int kSplit = Cell::kRecurrentBiasFrom;
  const int64_t H = geo.H, P = geo.P, GH = G * H, SH = (G - kSplit) * H;
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
  T* h_prev_out = static_cast<T*>(args.h_prev);
  T* unprojected = static_cast<T*>(args.unprojected);
  T* reset_h = static_cast<T*>(args.reset_h);
  RF_GRID_STRIDE(e, geo.B * H) {
    const int64_t b = e / H, j = e % H;
    const int64_t row = row_of(geo, t, b);
    if (!active(geo, t, b)) {
      // Zero rows contribute nothing to the weight-gradient GEMMs; dh and dc pass unchanged.
      for (int64_t k = j; k < GH; k += H) store(d_gates_x + row * GH + k, A(0));
      for (int64_t k = j; k < SH; k += H) store(d_gates_h + row * SH + k, A(0));
      for (int64_t k = j; k < P; k += H) store(h_prev_out + row * P + k, A(0));
      if (reset_h) store(reset_h + row * H + j, A(0));
      if (unprojected) store(unprojected + row * H + j, A(0));
      continue;
    }
    const T* h_prev_row = first_step(geo, t, b)
                              ? h0 + b * P
                              : output + row_of(geo, geo.reverse ? t + 1 : t - 1, b) * P;
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
      if (g >= kSplit) store(d_gates_h + row * SH + (g - kSplit) * H + j, vdgh[g]);
    }
    if constexpr (Cell::kHasCellState) {
      dc[b * H + j] = dc_prev;
      if (unprojected) store(unprojected + row * H + j, Cell::unprojected_output(vsaved));
    }
    if (projection) {
      // All of dh_prev then goes through W_hh; this thread owns columns j, j + H, ...
      for (int64_t k = j; k < P; k += H) dh[b * P + k] = A(0);
    } else {
      dh[b * P + j] = dh_prev;
    }
  }
}

// grid: B*H threads. d_rh acc [B, H].
template <class Cell, class T>
__global__ void reset_backward_kernel(StepGeometry geo, int64_t t, BackwardStep args,
                                      const typename AccOf<T>::type* d_rh) {
  using A = typename AccOf<T>::type;
  const int64_t H = geo.H, P = geo.P, GH = Cell::kGates * H, SH = Cell::kSaved * H;
  const T* saved = static_cast<const T*>(args.saved);
  const T* h_prevs = static_cast<const T*>(args.h_prev);
  A* dh = static_cast<A*>(args.dh);
  T* d_gates_x = static_cast<T*>(args.d_gates_x);
  T* reset_h = static_cast<T*>(args.reset_h);
  RF_GRID_STRIDE(e, geo.B * H) {
    const int64_t b = e / H, j = e % H;
    const int64_t row = row_of(geo, t, b);
    if (!active(geo, t, b)) continue;
    const A r = to_acc(saved[row * SH + j]);
    const A h_prev = to_acc(h_prevs[row * P + j]);
    A dh_prev = dh[b * P + j];
    const A dr_pre = Cell::reset_backward(r, h_prev, d_rh[b * H + j], dh_prev);
    dh[b * P + j] = dh_prev;
    store(d_gates_x + row * GH + j, dr_pre);
    store(reset_h + row * H + j, r * h_prev);
  }
}

constexpr int kThreads = 256;

int blocks_for(int64_t n) {
  // Grid-stride loops cover the rest; 2^16 blocks fill any current GPU many times over.
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 16));
}

template <class T>
struct Tag {
  using type = T;
};

template <class F>
cudaError_t dispatch_type(ElementType type, F&& f) {
  switch (type) {
    case ElementType::Float:
      return f(Tag<float>{});
    case ElementType::Double:
      return f(Tag<double>{});
    case ElementType::Half:
      return f(Tag<__half>{});
    case ElementType::BFloat16:
      return f(Tag<__nv_bfloat16>{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_forward_step(CellKind kind, ElementType type, const StepGeometry& geo, int64_t t,
                                const ForwardStep& args, cudaStream_t stream) {
  const int64_t n = geo.B * geo.H;
  if (n == 0) return cudaSuccess;
  return dispatch_cell(kind, [&](auto cell) {
    using Cell = decltype(cell);
    return dispatch_type(type, [&](auto tag) {
      using T = typename decltype(tag)::type;
      forward_step_kernel<Cell, T><<<blocks_for(n), kThreads, 0, stream>>>(geo, t, args);
      return cudaGetLastError();
    });
  });
}

cudaError_t launch_reset_forward(CellKind kind, ElementType type, const StepGeometry& geo,
                                 int64_t t, const ForwardStep& args, void* reset_h,
                                 cudaStream_t stream) {
  const int64_t n = geo.B * geo.H;
  if (n == 0) return cudaSuccess;
  return dispatch_cell(kind, [&](auto cell) {
    using Cell = decltype(cell);
    if constexpr (!Cell::kResetBefore) {
      return cudaErrorInvalidValue;  // only the reset-before GRU has this pass
    } else {
      return dispatch_type(type, [&](auto tag) {
        using T = typename decltype(tag)::type;
        reset_forward_kernel<Cell, T>
            <<<blocks_for(n), kThreads, 0, stream>>>(geo, t, args, static_cast<T*>(reset_h));
        return cudaGetLastError();
      });
    }
  });
}

cudaError_t launch_store_projection(ElementType type, const StepGeometry& geo, int64_t t,
                                    const void* projected, void* h, void* output,
                                    cudaStream_t stream) {
  const int64_t n = geo.B * geo.P;
  if (n == 0) return cudaSuccess;
  return dispatch_type(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = typename AccOf<T>::type;
    store_projection_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(
        geo, t, static_cast<const A*>(projected), static_cast<T*>(h), static_cast<T*>(output));
    return cudaGetLastError();
  });
}

cudaError_t launch_projection_grad(ElementType type, const StepGeometry& geo, int64_t t,
                                   const void* grad_output, void* dh, void* d_projected,
                                   cudaStream_t stream) {
  const int64_t n = geo.B * geo.P;
  if (n == 0) return cudaSuccess;
  return dispatch_type(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = typename AccOf<T>::type;
    projection_grad_kernel<T>
        <<<blocks_for(n), kThreads, 0, stream>>>(geo, t, static_cast<const T*>(grad_output),
                                                 static_cast<A*>(dh), static_cast<T*>(d_projected));
    return cudaGetLastError();
  });
}

cudaError_t launch_backward_step(CellKind kind, ElementType type, const StepGeometry& geo,
                                 int64_t t, const BackwardStep& args, cudaStream_t stream) {
  const int64_t n = geo.B * geo.H;
  if (n == 0) return cudaSuccess;
  return dispatch_cell(kind, [&](auto cell) {
    using Cell = decltype(cell);
    return dispatch_type(type, [&](auto tag) {
      using T = typename decltype(tag)::type;
      backward_step_kernel<Cell, T><<<blocks_for(n), kThreads, 0, stream>>>(geo, t, args);
      return cudaGetLastError();
    });
  });
}

cudaError_t launch_reset_backward(CellKind kind, ElementType type, const StepGeometry& geo,
                                  int64_t t, const BackwardStep& args, const void* d_rh,
                                  cudaStream_t stream) {
  const int64_t n = geo.B * geo.H;
  if (n == 0) return cudaSuccess;
  return dispatch_cell(kind, [&](auto cell) {
    using Cell = decltype(cell);
    if constexpr (!Cell::kResetBefore) {
      return cudaErrorInvalidValue;
    } else {
      return dispatch_type(type, [&](auto tag) {
        using T = typename decltype(tag)::type;
        using A = typename AccOf<T>::type;
        reset_backward_kernel<Cell, T>
            <<<blocks_for(n), kThreads, 0, stream>>>(geo, t, args, static_cast<const A*>(d_rh));
        return cudaGetLastError();
      });
    }
  });
}

}  // namespace rnnfast::cuda
