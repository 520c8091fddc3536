// Row-major GEMMs through cuBLAS on the current stream, for the CUDA recurrence engine:
// no allocation and no dispatcher call, so the step loop can call them every step (and a
// CUDA graph can capture them).
#pragma once

#include <ATen/core/Tensor.h>
#include <cublas_v2.h>

#include <cstdint>

#include "gemm_operand.h"

namespace rnnfast::cuda {

// cuBLAS as torch sets it up for the current device and stream (workspace, math mode),
// fetched once per op call; the step loop then calls cuBLAS directly.
class Blas {
 public:
  Blas();

  // c [M, N] (row-major, leading dimension ldc, of type c_type) = alpha * op(a) [M, K] @
  // op(b) [K, N] + beta * c. a and b hold ab_type values (float, double, half or bfloat16);
  // the products accumulate in float (double for double), in TF32 only where torch allows
  // it for float32 matmuls. c_type is ab_type or float.
  void gemm(at::ScalarType ab_type, at::ScalarType c_type, int64_t M, int64_t N, int64_t K,
            double alpha, Operand a, Operand b, double beta, void* c, int64_t ldc) const;

 private:
  cublasHandle_t handle_;
  bool allow_tf32_;
};

}  // namespace rnnfast::cuda
