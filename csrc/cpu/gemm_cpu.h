// Row-major GEMM straight into the BLAS that torch links (MKL on x86): no dispatcher call and
// no allocation, so the per-step loop can call it T times at little cost.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>

namespace rnnfast::cpu {

// A matrix operand: row-major with leading dimension ld, transposed if `trans`.
template <class T>
struct MatrixRef {
  const T* data;
  int64_t ld;
  bool trans;
};

// View a 2-D tensor [rows, cols] as a MatrixRef without copying where its strides allow
// (row-major, or column-major as for W.t()); `storage` keeps a contiguous copy otherwise.
template <class T>
MatrixRef<T> matrix_ref(const at::Tensor& m, at::Tensor& storage) {
  const int64_t rows = m.size(0), cols = m.size(1);
  if ((m.stride(1) == 1 || cols == 1) && (rows == 1 || m.stride(0) >= std::max<int64_t>(cols, 1))) {
    return {m.const_data_ptr<T>(), rows == 1 ? std::max<int64_t>(cols, 1) : m.stride(0), false};
  }
  if ((m.stride(0) == 1 || rows == 1) && (cols == 1 || m.stride(1) >= std::max<int64_t>(rows, 1))) {
    return {m.const_data_ptr<T>(), cols == 1 ? std::max<int64_t>(rows, 1) : m.stride(1), true};
  }
  storage = m.contiguous();
  return {storage.const_data_ptr<T>(), std::max<int64_t>(cols, 1), false};
}

// C[M, N] = op(A)[M, K] * op(B)[K, N] + beta * C, all row-major; C has leading dimension
// ldc and the compute type (float for bfloat16 operands). Defined for float, double and
// at::BFloat16 in gemm_cpu.cpp.
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
// once into BLAS's internal layout where the BLAS offers it (MKL, float32) and the product
// is large enough to gain; otherwise a plain reference to it.
template <class T>
class PackedMatrix {
 public:
  // op(B) is [K, N]; M is the row count of every later product.
  PackedMatrix(int64_t M, int64_t N, int64_t K, MatrixRef<T> B);
  // C[M, N] = op(A)[M, K] * B + beta * C.
  void multiply(MatrixRef<T> A, float beta, at::opmath_type<T>* C, int64_t ldc) const;
  // Whether products of these sizes are packed (then B's own layout does not matter).
  static bool packs(int64_t M, int64_t N, int64_t K);

 private:
  int64_t M_, N_, K_;
  MatrixRef<T> B_;
  // MKL's packed layout, uninitialised (its size is several times the matrix's, and
  // zero-filling it cost more than the packing); undefined when not packed.
  at::Tensor packed_;
};

}  // namespace rnnfast::cpu
