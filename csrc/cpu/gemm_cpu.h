// Row-major GEMM straight into the BLAS that torch links (MKL on x86): no dispatcher call and
// no allocation, so the per-step loop can call it T times at little cost.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>

#include "matrix_ref.h"
#include "panel_gemm.h"

namespace rnnfast::cpu {

// C[M, N] = op(A)[M, K] * op(B)[K, N] + beta * C, all row-major; C has leading dimension
// ldc and the compute type (float for bfloat16 and float16 operands). Defined for float,
// double, at::BFloat16 and at::Half in gemm_cpu.cpp.
template <class T>
void gemm(int64_t M, int64_t N, int64_t K, MatrixRef<T> A, MatrixRef<T> B, float beta,
          at::opmath_type<T>* C, int64_t ldc);

// Holds the calling thread's BLAS calls to that thread alone for the guard's life, where the
// BLAS allows it (MKL's thread-local setting); `active` false makes it do nothing.
class SingleThreadedBlas {
 public:
  explicit SingleThreadedBlas(bool active = true);
  ~SingleThreadedBlas();
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int previous_ = -1;
};

// The right-hand operand of a GEMM that is applied many times (W_hh at every step), packed
// once where the product is large enough and applied often enough to gain (float32): into
// column panels (panel_gemm.h) or into MKL's internal layout, as step_gemm() says; otherwise a
// plain reference to it.
template <class T>
class PackedMatrix {
 public:
  // op(B) is [K, N]; M is the row count of every later product, `uses` their number (steps).
  PackedMatrix(int64_t M, int64_t N, int64_t K, MatrixRef<T> B, int64_t uses);
  // C[M, N] = op(A)[M, K] * B + beta * C.
  void multiply(MatrixRef<T> A, float beta, at::opmath_type<T>* C, int64_t ldc) const;
  // Whether `uses` products of these sizes are packed (then B's own layout does not matter).
  static bool packs(int64_t M, int64_t N, int64_t K, int64_t uses);

 private:
  int64_t M_, N_, K_;
  MatrixRef<T> B_;
  // MKL's packed layout, uninitialised (its size is several times the matrix's, and
  // zero-filling it cost more than the packing) and pooled (scratch_pool.h: fresh pages at
  // every call cost as much again); undefined when not packed by MKL.
  at::Tensor packed_;
  PanelMatrix panels_;
};

}  // namespace rnnfast::cpu
