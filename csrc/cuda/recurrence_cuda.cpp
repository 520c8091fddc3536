// The CUDA backend of the ops: the engine of recurrence_engine.h on cuBLAS and the kernels of
// recurrence_kernels.cu, on the current stream of the input's device.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "blas_cuda.h"
#include "recurrence_engine.h"
#include "recurrence_kernels.h"

namespace rnnfast::cuda {
namespace {

// The engine's Device (see recurrence_engine.h): every launch checked.
class CudaDevice {
 public:
  using Guard = c10::cuda::CUDAGuard;

  CudaDevice() : stream_(at::cuda::getCurrentCUDAStream()) {}

  void gemm(at::ScalarType ab_type, at::ScalarType c_type, int64_t M, int64_t N, int64_t K,
            double alpha, Operand a, Operand b, double beta, void* c, int64_t ldc) const {
    blas_.gemm(ab_type, c_type, M, N, K, alpha, a, b, beta, c, ldc);
  }

  void forward_step(CellKind kind, ElementType type, const StepGeometry& geo, int64_t t,
                    const ForwardStep& args) const {
    C10_CUDA_CHECK(launch_forward_step(kind, type, geo, t, args, stream_));
  }

  void reset_forward(CellKind kind, ElementType type, const StepGeometry& geo, int64_t t,
                     const ForwardStep& args, void* reset_h) const {
    C10_CUDA_CHECK(launch_reset_forward(kind, type, geo, t, args, reset_h, stream_));
  }

  void store_projection(ElementType type, const StepGeometry& geo, int64_t t, const void* projected,
                        void* h, void* output) const {
    C10_CUDA_CHECK(launch_store_projection(type, geo, t, projected, h, output, stream_));
  }

  void projection_grad(ElementType type, const StepGeometry& geo, int64_t t,
                       const void* grad_output, void* dh, void* d_projected) const {
    C10_CUDA_CHECK(launch_projection_grad(type, geo, t, grad_output, dh, d_projected, stream_));
  }

  void backward_step(CellKind kind, ElementType type, const StepGeometry& geo, int64_t t,
                     const BackwardStep& args) const {
    C10_CUDA_CHECK(launch_backward_step(kind, type, geo, t, args, stream_));
  }

  void reset_backward(CellKind kind, ElementType type, const StepGeometry& geo, int64_t t,
                      const BackwardStep& args, const void* d_rh) const {
    C10_CUDA_CHECK(launch_reset_backward(kind, type, geo, t, args, d_rh, stream_));
  }

 private:
  cudaStream_t stream_;
  Blas blas_;
};

}  // namespace
}  // namespace rnnfast::cuda

TORCH_LIBRARY_IMPL(rnnfast, CUDA, m) {
  m.impl("recurrent_forward", &rnnfast::cuda::device_recurrent_forward<rnnfast::cuda::CudaDevice>);
  m.impl("recurrent_backward",
         &rnnfast::cuda::device_recurrent_backward<rnnfast::cuda::CudaDevice>);
}
