// The pointwise kernels of the CUDA recurrence engine: one thread per element of the
// bodies in step_elements.h, in grid-stride loops.
#include <algorithm>
#include <utility>

#include "recurrence_kernels.h"
#include "step_elements.h"

namespace rnnfast::cuda {
namespace {

#define RF_GRID_STRIDE(e, n)                                                \
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < (n); \
       e += int64_t(gridDim.x) * blockDim.x)

// grid: B*H threads.
template <class Cell, class T>
__global__ void forward_step_kernel(StepGeometry geo, int64_t t, ForwardStep args) {
  RF_GRID_STRIDE(e, geo.B * geo.H) forward_step_element<Cell, T>(geo, t, args, e);
}

// grid: B*H threads.
template <class Cell, class T>
__global__ void reset_forward_kernel(StepGeometry geo, int64_t t, ForwardStep args, T* reset_h) {
  RF_GRID_STRIDE(e, geo.B * geo.H) reset_forward_element<Cell, T>(geo, t, args, reset_h, e);
}

// grid: B*P threads.
template <class T>
__global__ void store_projection_kernel(StepGeometry geo, int64_t t,
                                        const typename Storage<T>::Acc* projected, T* h,
                                        T* output) {
  RF_GRID_STRIDE(e, geo.B * geo.P) store_projection_element<T>(geo, t, projected, h, output, e);
}

// grid: B*P threads.
template <class T>
__global__ void projection_grad_kernel(StepGeometry geo, int64_t t, const T* grad_output,
                                       typename Storage<T>::Acc* dh, T* d_projected) {
  RF_GRID_STRIDE(e, geo.B * geo.P) {
    projection_grad_element<T>(geo, t, grad_output, dh, d_projected, e);
  }
}

// grid: B*H threads.
template <class Cell, class T>
__global__ void backward_step_kernel(StepGeometry geo, int64_t t, BackwardStep args) {
  RF_GRID_STRIDE(e, geo.B * geo.H) backward_step_element<Cell, T>(geo, t, args, e);
}

// grid: B*H threads.
template <class Cell, class T>
__global__ void reset_backward_kernel(StepGeometry geo, int64_t t, BackwardStep args,
                                      const typename Storage<T>::Acc* d_rh) {
  RF_GRID_STRIDE(e, geo.B * geo.H) reset_backward_element<Cell, T>(geo, t, args, d_rh, e);
}

constexpr int kThreads = 256;

int blocks_for(int64_t n) {
  // Grid-stride loops cover the rest; 2^16 blocks fill any current GPU many times over.
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 16));
}

template <class F>
cudaError_t dispatch_type(ElementType type, F&& f) {
  return dispatch_element_type<__half, __nv_bfloat16>(type, std::forward<F>(f));
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
    using A = typename Storage<T>::Acc;
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
    using A = typename Storage<T>::Acc;
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
        using A = typename Storage<T>::Acc;
        reset_backward_kernel<Cell, T>
            <<<blocks_for(n), kThreads, 0, stream>>>(geo, t, args, static_cast<const A*>(d_rh));
        return cudaGetLastError();
      });
    }
  });
}

}  // namespace rnnfast::cuda
