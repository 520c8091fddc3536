// What the engine's kernels read and write: batch values as rows with a stride, operands that
// broadcast a weight vector over the rows or one column (a [B, 1] value, a scalar) over the
// columns.
#pragma once

#include <ATen/cpu/vec/vec.h>
#include <c10/macros/Macros.h>

#include <algorithm>
#include <cstdint>

namespace rnnfast::scan {

// A batch value [B, cols]: row b starts at data + b * ld.
template <class T>
struct Rows {
  T* data = nullptr;
  int64_t ld = 0;
};

// An input of a pointwise kernel: element (b, j) is data[b * ld + (per_column ? j : 0)].
// A weight vector has ld 0; a [B, 1] value or a scalar is not per_column.
template <class T>
struct Operand {
  const T* data;
  int64_t ld;
  bool per_column;

  // Inlined always: called per vector of every operand, a call each would cost more than it.
  C10_ALWAYS_INLINE at::vec::Vectorized<T> load(int64_t b, int64_t j, int64_t n) const {
    using V = at::vec::Vectorized<T>;
    const T* row = data + b * ld;
    if (!per_column) return V(row[0]);
    return n == V::size() ? V::loadu(row + j) : V::loadu(row + j, n);
  }
};

// out(b, j) = f(in_0(b, j), ..) over [B, N], a vector of columns at a time.
template <class T, class F, class... Ins>
void map_rows(int64_t B, int64_t N, Rows<T> out, F f, const Ins&... ins) {
  using V = at::vec::Vectorized<T>;
  if (N % V::size() == 0 && (ins.per_column && ...)) {
    // Whole vectors of per-column operands (the usual case): no tail and no broadcast to test
    // at every vector; rows that all follow one another run as one.
    const bool one_run = out.ld == N && ((ins.ld == N) && ...);
    const int64_t rows = one_run ? 1 : B, cols = one_run ? B * N : N;
    for (int64_t b = 0; b < rows; ++b) {
      T* row = out.data + b * out.ld;
      for (int64_t j = 0; j < cols; j += V::size()) {
        f(V::loadu(ins.data + b * ins.ld + j)...).store(row + j);
      }
    }
    return;
  }
  for (int64_t b = 0; b < B; ++b) {
    T* row = out.data + b * out.ld;
    for (int64_t j = 0; j < N; j += V::size()) {
      const int64_t n = std::min<int64_t>(V::size(), N - j);
      const V r = f(ins.load(b, j, n)...);
      if (n == V::size()) {
        r.store(row + j);
      } else {
        r.store(row + j, n);
      }
    }
  }
}

}  // namespace rnnfast::scan
