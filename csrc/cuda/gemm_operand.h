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

// Pointer to element `offset` of a tensor's data (for operands that start inside a tensor).
inline const void* element_at(const at::Tensor& t, int64_t offset) {
  return static_cast<const char*>(t.const_data_ptr()) + offset * t.element_size();
}
inline void* element_at(at::Tensor& t, int64_t offset) {
  return static_cast<char*>(t.data_ptr()) + offset * t.element_size();
}

}  // namespace rnnfast::cuda
