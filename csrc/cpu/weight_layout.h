// Weight operands of the CPU engine's products: views of a matrix's rows and columns, and the
// transposed copies that make x @ W^T a plain row-major GEMM.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

#include "matrix_ref.h"

namespace rnnfast::cpu {

// Rows [r0, ...) of a matrix, keeping its layout.
template <class T>
MatrixRef<T> from_row(MatrixRef<T> m, int64_t r0) {
  return {m.trans ? m.data + r0 : m.data + r0 * m.ld, m.ld, m.trans};
}

// Columns [c0, ...) of a matrix, keeping its layout.
template <class T>
MatrixRef<T> from_column(MatrixRef<T> m, int64_t c0) {
  return {m.trans ? m.data + c0 * m.ld : m.data + c0, m.ld, m.trans};
}

template <class T>
MatrixRef<T> dense(const T* data, int64_t ld) {
  return {data, ld, false};
}

// w [R, C] (any strides) copied to a contiguous [C, R]: BLAS runs faster on W^T laid out
// row-major than on W transposed in place, and the copy is paid once per call, not per step.
// In 16 x 16 tiles, through ATen's SIMD transpose where w's rows are contiguous (every
// nn.Module weight), which beats both a plain loop and ATen's copy of w.t().
// Into pooled memory: a fresh MiB would be new pages at every call (scratch_pool.h).
template <class T>
void transposed_copy(const at::Tensor& w, T* dst, int64_t ld) {
  const int64_t R = w.size(0), C = w.size(1), s0 = w.stride(0), s1 = w.stride(1);
  const T* src = w.const_data_ptr<T>();
  constexpr int64_t kTile = 16;
  for (int64_t r0 = 0; r0 < R; r0 += kTile) {
    const int64_t rows = std::min(kTile, R - r0);
    for (int64_t c0 = 0; c0 < C; c0 += kTile) {
      const int64_t cols = std::min(kTile, C - c0);
      if (s1 == 1) {
        at::vec::transpose_mxn<T>(src + r0 * s0 + c0, s0, dst + c0 * ld + r0, ld,
                                  static_cast<int>(rows), static_cast<int>(cols));
        continue;
      }
      for (int64_t r = r0; r < r0 + rows; ++r) {
        for (int64_t c = c0; c < c0 + cols; ++c) dst[c * ld + r] = src[r * s0 + c * s1];
      }
    }
  }
}

// The row stride of a weight's transposed copy with `columns` columns: a cache line more than
// dense where a dense row would span a multiple of 1 KiB. Rows that far apart fall into a few
// cache sets, so a product that walks down the rows of a weight (a step's, at small B) keeps
// little of it cached from one step to the next.
template <class T>
int64_t copy_row_stride(int64_t columns) {
  constexpr int64_t kLine = 64 / sizeof(T);
  return (columns * int64_t(sizeof(T))) % 1024 == 0 ? columns + kLine : columns;
}

// Elements of the transposed copy of w [R, C]: C rows of copy_row_stride(R).
template <class T>
int64_t transposed_copy_size(const at::Tensor& w) {
  return w.size(1) * copy_row_stride<T>(w.size(0));
}

// W^T for a weight w [R, C], as the right-hand operand of the products x @ W^T: copied into
// copy_to ([C, R] with rows copy_row_stride(R) apart, where not null) or read in place. A
// row-major copy makes those plain row-major GEMMs (faster, and the only kind the small-GEMM
// kernel takes), which pays once the weight serves a few rows over several steps
// (ForwardPlan's copy_weight).
template <class T>
MatrixRef<T> weight_transposed(const at::Tensor& w, T* copy_to, at::Tensor& storage) {
  if (copy_to != nullptr) {
    const int64_t ld = copy_row_stride<T>(w.size(0));
    transposed_copy<T>(w, copy_to, ld);
    return dense(static_cast<const T*>(copy_to), ld);
  }
  const MatrixRef<T> m = matrix_ref<T>(w, storage);
  return {m.data, m.ld, !m.trans};
}

}  // namespace rnnfast::cpu
