// The pointwise kernels of the CUDA recurrence engine: one kernel template, one thread per
// element of a body of step_elements.h in a grid-stride loop, and a launcher per pass.
#include <algorithm>
#include <utility>

#include "recurrence_kernels.h"
#include "step_elements.h"

namespace rnnfast::cuda {
namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) {
  // Grid-stride loops cover the rest; 2^16 blocks fill any current GPU many times over.
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 16));
}

// grid: n threads, element e running body(args..., e), a function of step_elements.h.
template <auto body, class... Args>
__global__ void elements_kernel(int64_t n, Args... args) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    body(args..., e);
  }
}

// One pass over elements [0, n) (B*H, or B*P for the projection passes) on `stream`.
template <auto body, class... Args>
cudaError_t launch_elements(int64_t n, cudaStream_t stream, const Args&... args) {
  if (n == 0) return cudaSuccess;
  elements_kernel<body, Args...><<<blocks_for(n), kThreads, 0, stream>>>(n, args...);
  return cudaGetLastError();
}

// f(Cell{}, Tag<T>{}) for the cell `kind` and the storage type T of `type`.
template <class F>
cudaError_t dispatch_cell_and_type(CellKind kind, ElementType type, F&& f) {
  return dispatch_cell(kind, [&](auto cell) {
    return dispatch_element_type<__half, __nv_bfloat16>(type,
                                                        [&](auto tag) { return f(cell, tag); });
  });
}

template <class F>
cudaError_t dispatch_type(ElementType type, F&& f) {
  return dispatch_element_type<__half, __nv_bfloat16>(type, std::forward<F>(f));
}

}  // namespace

cudaError_t launch_forward_step(CellKind kind, ElementType type, const StepGeometry& geo, int64_t t,
                                const ForwardStep& args, cudaStream_t stream) {
  return dispatch_cell_and_type(kind, type, [&](auto cell, auto tag) {
    using Cell = decltype(cell);
    using T = typename decltype(tag)::type;
    return launch_elements<forward_step_element<Cell, T>>(geo.B * geo.H, stream, geo, t, args);
  });
}

cudaError_t launch_reset_forward(CellKind kind, ElementType type, const StepGeometry& geo,
                                 int64_t t, const ForwardStep& args, void* reset_h,
                                 cudaStream_t stream) {
  return dispatch_cell_and_type(kind, type, [&](auto cell, auto tag) {
    using Cell = decltype(cell);
    using T = typename decltype(tag)::type;
    if constexpr (!Cell::kResetBefore) {
      return cudaErrorInvalidValue;  // only the reset-before GRU has this pass
    } else {
      return launch_elements<reset_forward_element<Cell, T>>(geo.B * geo.H, stream, geo, t, args,
                                                             static_cast<T*>(reset_h));
    }
  });
}

cudaError_t launch_store_projection(ElementType type, const StepGeometry& geo, int64_t t,
                                    const void* projected, void* h, void* output,
                                    cudaStream_t stream) {
  return dispatch_type(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = typename Storage<T>::Acc;
    return launch_elements<store_projection_element<T>>(
        geo.B * geo.P, stream, geo, t, static_cast<const A*>(projected), static_cast<T*>(h),
        static_cast<T*>(output));
  });
}

cudaError_t launch_projection_grad(ElementType type, const StepGeometry& geo, int64_t t,
                                   const void* grad_output, void* dh, void* d_projected,
                                   cudaStream_t stream) {
  return dispatch_type(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = typename Storage<T>::Acc;
    return launch_elements<projection_grad_element<T>>(
        geo.B * geo.P, stream, geo, t, static_cast<const T*>(grad_output), static_cast<A*>(dh),
        static_cast<T*>(d_projected));
  });
}

cudaError_t launch_backward_step(CellKind kind, ElementType type, const StepGeometry& geo,
                                 int64_t t, const BackwardStep& args, cudaStream_t stream) {
  return dispatch_cell_and_type(kind, type, [&](auto cell, auto tag) {
    using Cell = decltype(cell);
    using T = typename decltype(tag)::type;
    return launch_elements<backward_step_element<Cell, T>>(geo.B * geo.H, stream, geo, t, args);
  });
}

cudaError_t launch_reset_backward(CellKind kind, ElementType type, const StepGeometry& geo,
                                  int64_t t, const BackwardStep& args, const void* d_rh,
                                  cudaStream_t stream) {
  return dispatch_cell_and_type(kind, type, [&](auto cell, auto tag) {
    using Cell = decltype(cell);
    using T = typename decltype(tag)::type;
    if constexpr (!Cell::kResetBefore) {
      return cudaErrorInvalidValue;
    } else {
      using A = typename Storage<T>::Acc;
      return launch_elements<reset_backward_element<Cell, T>>(geo.B * geo.H, stream, geo, t, args,
                                                              static_cast<const A*>(d_rh));
    }
  });
}

}  // namespace rnnfast::cuda
