// A view of a matrix operand for the CPU GEMMs: pointer, leading dimension, transposition.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>

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

}  // namespace rnnfast::cpu
