#include "blas_cuda.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/Exceptions.h>
#include <c10/util/Exception.h>

#include <limits>

namespace rnnfast::cuda {
namespace {

cudaDataType_t cuda_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return CUDA_R_32F;
    case at::kDouble:
      return CUDA_R_64F;
    case at::kHalf:
      return CUDA_R_16F;
    case at::kBFloat16:
      return CUDA_R_16BF;
    default:
      TORCH_CHECK(false, "rnnfast: no cuBLAS type for ", t);
  }
}

int as_int(int64_t v, const char* what) {
  TORCH_CHECK(v >= 0 && v <= std::numeric_limits<int>::max(), "rnnfast: GEMM ", what, " = ", v,
              " exceeds what cuBLAS takes (2^31 - 1)");
  return static_cast<int>(v);
}

// Whether torch set the handle up for TF32. Read from the handle rather than through
// Context::allowTF32CuBLAS(): that getter is deprecated, raises once a program has set TF32
// through torch's newer fp32_precision API, and ignores at::NoTF32Guard, all of which torch
// weighed when it set the handle's math mode.
bool handle_allows_tf32(cublasHandle_t handle) {
  cublasMath_t mode;
  TORCH_CUDABLAS_CHECK(cublasGetMathMode(handle, &mode));
  // The low bits are the mode; higher ones are flags (such as disallowing reduced-precision
  // reductions).
  return (static_cast<int>(mode) & 0xF) == static_cast<int>(CUBLAS_TF32_TENSOR_OP_MATH);
}

}  // namespace

// The handle comes bound to the current stream, with torch's workspace and math mode.
Blas::Blas()
    : handle_(at::cuda::getCurrentCUDABlasHandle()), allow_tf32_(handle_allows_tf32(handle_)) {}

void Blas::gemm(at::ScalarType ab_type, at::ScalarType c_type, int64_t M, int64_t N, int64_t K,
                double alpha, Operand a, Operand b, double beta, void* c, int64_t ldc) const {
  if (M == 0 || N == 0) return;
  cublasHandle_t handle = handle_;
  const ColumnMajorGemm g = column_major(M, N, K, a, b, ldc);
  const cublasOperation_t op_first = g.trans_first ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = g.trans_second ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int m = as_int(g.m, "N"), n = as_int(g.n, "M"), k = as_int(g.k, "K");
  const int ld_first = as_int(g.ld_first, "ld"), ld_second = as_int(g.ld_second, "ld");
  const int ld_c = as_int(g.ldc, "ldc");
  if (ab_type == at::kDouble) {
    const double alpha_d = alpha, beta_d = beta;
    TORCH_CUDABLAS_CHECK(cublasGemmEx(handle, op_first, op_second, m, n, k, &alpha_d, g.first,
                                      CUDA_R_64F, ld_first, g.second, CUDA_R_64F, ld_second,
                                      &beta_d, c, CUDA_R_64F, ld_c, CUBLAS_COMPUTE_64F,
                                      CUBLAS_GEMM_DEFAULT));
    return;
  }
  const float alpha_f = static_cast<float>(alpha), beta_f = static_cast<float>(beta);
  const cublasComputeType_t compute =
      ab_type == at::kFloat && allow_tf32_ ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const cudaDataType_t t = cuda_type(ab_type);
  TORCH_CUDABLAS_CHECK(cublasGemmEx(handle, op_first, op_second, m, n, k, &alpha_f, g.first, t,
                                    ld_first, g.second, t, ld_second, &beta_f, c, cuda_type(c_type),
                                    ld_c, compute, CUBLAS_GEMM_DEFAULT));
}

}  // namespace rnnfast::cuda
