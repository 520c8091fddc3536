// How the CUDA engine names a GEMM operand: a row-major matrix in raw memory, possibly
// starting inside a tensor. Free of CUDA types, so the engine also builds for the host.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace rnnfast::cuda {

// A row-major matrix operand: element (r, c) of op(M) is data[r * ld + c], or with `trans`
// data[c * ld + r].
struct Operand {
  const void* data;
  int64_t ld;
  bool trans;
};

inline Operand rows(const void* data, int64_t ld) { return {data, ld, false}; }
inline Operand transposed(const void* data, int64_t ld) { return {data, ld, true}; }

// A GEMM as cuBLAS takes it, column-major: c [m, n] = alpha * op(first) [m, k] op(second)
// [k, n] + beta * c, where element (i, j) of a stored matrix X is X[i + j * ld]. op(first) is
// the stored first, or with trans_first its transpose; so for second. cuBLAS requires each
// ld to be at least its stored matrix's row count (and at least 1).
struct ColumnMajorGemm {
  int64_t m, n, k;
  const void* first;
  int64_t ld_first;
  bool trans_first;
  const void* second;
  int64_t ld_second;
  bool trans_second;
  int64_t ldc;
};

// The row-major c [M, N] = op(a) [M, K] op(b) [K, N] as cuBLAS's column-major call: c read
// column-major is c^T = op(b)^T op(a)^T, so b goes first, and a row-major operand read as
// stored (no `trans`) is, column-major, the transpose already. Both cuda::Blas and the host
// build (on_host/) go through this, so the tests check it.
inline ColumnMajorGemm column_major(int64_t M, int64_t N, int64_t K, Operand a, Operand b,
                                    int64_t ldc) {
  return {N, M, K, b.data, b.ld, b.trans, a.data, a.ld, a.trans, ldc};
}

// Pointer to element `offset` of a tensor's data (for operands that start inside a tensor).
inline const void* element_at(const at::Tensor& t, int64_t offset) {
  return static_cast<const char*>(t.const_data_ptr()) + offset * t.element_size();
}
inline void* element_at(at::Tensor& t, int64_t offset) {
  return static_cast<char*>(t.data_ptr()) + offset * t.element_size();
}

}  // namespace rnnfast::cuda
