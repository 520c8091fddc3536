// The register-blocked inner loop of the CPU GEMMs (small_gemm in gemm_cpu.cpp, the panels of
// panel_gemm.cpp): C (+)= op(A) B for a block of at most two SIMD vectors of columns.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>

namespace rnnfast::cpu {

// The rows of column_block's register blocks.
constexpr int64_t kBlockRows = 4;

// kRows x kVecs block of C = op(A) B (+ C): kRows * kVecs independent accumulators hide the
// FMA latency that a single row's chain would expose, held in registers across the k loop
// (the unroll pragmas let GCC keep them out of memory: without them it stored them all to
// the stack at every k, and the loop ran at a third of the speed). n_last: lanes used in the
// last vector. A(r, k) is A[r * lda + k], or A[k * lda + r] where kTransA. kPaddedB: B's rows
// may be read as whole vectors (zero-padded panels), so its loads need no lane count.
template <int kRows, int kVecs, bool kTransA, bool kPaddedB, class T>
inline void register_block(int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                           bool accumulate, T* C, int64_t ldc, int64_t n_last) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t W = V::size();
  const auto lanes = [&](int v) { return v == kVecs - 1 ? n_last : W; };
  V acc[kRows][kVecs];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < kVecs; ++v) {
      acc[r][v] = accumulate ? V::loadu(C + r * ldc + v * W, lanes(v)) : V(0);
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    V b[kVecs];
#pragma GCC unroll 2
    for (int v = 0; v < kVecs; ++v) {
      b[v] = kPaddedB ? V::loadu(B + k * ldb + v * W) : V::loadu(B + k * ldb + v * W, lanes(v));
    }
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) {
      const V a(kTransA ? A[k * lda + r] : A[r * lda + k]);
#pragma GCC unroll 2
      for (int v = 0; v < kVecs; ++v) acc[r][v] = at::vec::fmadd(a, b[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < kVecs; ++v) acc[r][v].store(C + r * ldc + v * W, lanes(v));
  }
}

// C[M, width] = op(A)[M, K] B[K, width] (+ C) for width <= 2 vectors: blocks of kBlockRows
// rows, then the rest as one block. Each block reads all of B: the rest taken a row at a time
// would read it up to three more times.
template <bool kTransA, bool kPaddedB, class T>
void column_block(int64_t M, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                  int64_t width, bool accumulate, T* C, int64_t ldc) {
  constexpr int64_t W = at::vec::Vectorized<T>::size();
  const bool two = width > W;
  const int64_t n_last = two ? width - W : width;
  // Rows [i, i + kRows), with one or two vectors of columns.
  const auto rows = [&](auto rows_tag, int64_t i) {
    constexpr int kRows = decltype(rows_tag)::value;
    const T* a = kTransA ? A + i : A + i * lda;
    T* c = C + i * ldc;
    if (two) {
      register_block<kRows, 2, kTransA, kPaddedB>(K, a, lda, B, ldb, accumulate, c, ldc, n_last);
    } else {
      register_block<kRows, 1, kTransA, kPaddedB>(K, a, lda, B, ldb, accumulate, c, ldc, n_last);
    }
  };
  int64_t i = 0;
  for (; i + kBlockRows <= M; i += kBlockRows) rows(std::integral_constant<int, kBlockRows>{}, i);
  static_assert(kBlockRows == 4, "the rest below is of 1 to 3 rows");
  switch (M - i) {
    case 3:
      rows(std::integral_constant<int, 3>{}, i);
      break;
    case 2:
      rows(std::integral_constant<int, 2>{}, i);
      break;
    case 1:
      rows(std::integral_constant<int, 1>{}, i);
      break;
    default:
      break;
  }
}

}  // namespace rnnfast::cpu
