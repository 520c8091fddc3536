// The backward's products over a chunk of steps, once the reverse loop has filled the chunk's
// buffers: the weight gradients as GEMMs over the chunk's rows, the input gradient, and the
// bias gradients as column sums.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "gemm_cpu.h"
#include "recurrence_layer.h"
#include "row_layout.h"
#include "vec_math.h"
#include "weight_layout.h"

namespace rnnfast::cpu {

template <class Cell, class scalar_t>
struct ChunkGradients {
  using acc_t = at::opmath_type<scalar_t>;

  const Recurrence<Cell, scalar_t>& layer;

  // C[M, N] = beta * C + the sum over the chunk's steps k in [k0, k1) of dG_k^T X_k: dG_k the B
  // rows of step k in a chunk buffer (dG_t: its transpose, [M, chunk rows]), X_k the rows of
  // step t0 + k + shift of x ([T*B, N] in the caller's layout). The rows of consecutive
  // time-major steps form one matrix, and one GEMM; batch-first steps take a GEMM each.
  void add_step_products(int64_t M, int64_t N, MatrixRef<scalar_t> dG_t, const scalar_t* x,
                         int64_t t0, int64_t shift, int64_t k0, int64_t k1, float beta,
                         acc_t* C) const {
    const int64_t B = layer.sizes.B;
    const Seq& seq = layer.seq;
    if (k1 <= k0) return;
    if (!seq.batch_first) {
      gemm<scalar_t>(M, N, (k1 - k0) * B, from_column(dG_t, k0 * B),
                     dense(x + seq.row(t0 + k0 + shift, 0) * N, N), beta, C, N);
      return;
    }
    for (int64_t k = k0; k < k1; ++k) {
      gemm<scalar_t>(M, N, B, from_column(dG_t, k * B),
                     dense(x + seq.row(t0 + k + shift, 0) * N, seq.batch_step() * N),
                     k == k0 ? beta : 1.f, C, N);
    }
  }

  // C[M, P] = beta * C + dG^T h_prev over the chunk's steps [t0, t0 + steps): from the chunk's
  // copy hp where there is one, else from the output rows of the neighbouring steps and from
  // h0 for the sequences' first step (the same step for every sequence here).
  void add_h_prev_products(int64_t M, MatrixRef<scalar_t> dG_t, int64_t t0, int64_t steps,
                           const scalar_t* out, const scalar_t* h0, const scalar_t* hp, float beta,
                           acc_t* C) const {
    const int64_t B = layer.sizes.B, P = layer.sizes.P;
    if (hp) {
      gemm<scalar_t>(M, P, steps * B, dG_t, dense(hp, P), beta, C, P);
      return;
    }
    int64_t k0 = 0, k1 = steps;
    int64_t first = -1;  // the chunk's step that starts from h0, if any
    if (!layer.reverse && t0 == 0) first = k0++;
    if (layer.reverse && t0 + steps == layer.sizes.T) first = --k1;
    if (first >= 0) {
      gemm<scalar_t>(M, P, B, from_column(dG_t, first * B), dense(h0, P), beta, C, P);
      beta = 1.f;
    }
    add_step_products(M, P, dG_t, out, t0, layer.reverse ? 1 : -1, k0, k1, beta, C);
  }

  // grad_input rows of steps [t0, t0 + steps) = dgx W_ih: straight into grad_input (a copy of
  // it less, and its fresh pages faulted in by every BLAS thread) where dx_in_place, as one
  // GEMM time-major and one per step batch-first; otherwise through `dx` [steps * B, I] in the
  // compute type, copied out in parallel.
  void input_gradient(const scalar_t* dgx, int64_t t0, int64_t steps, MatrixRef<scalar_t> w_ih,
                      acc_t* dx, at::Tensor& grad_input) const {
    const int64_t B = layer.sizes.B, I = layer.sizes.I, T = layer.sizes.T, GH = layer.GH;
    const Seq& seq = layer.seq;
    scalar_t* gi = grad_input.data_ptr<scalar_t>();
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      if (layer.dx_in_place()) {
        if (!seq.batch_first) {
          gemm<scalar_t>(steps * B, I, GH, dense(dgx, GH), w_ih, 0.f, gi + t0 * B * I, I);
          return;
        }
        for (int64_t k = 0; k < steps; ++k) {
          gemm<scalar_t>(B, I, GH, dense(dgx + k * B * GH, GH), w_ih, 0.f,
                         gi + seq.row(t0 + k, 0) * I, T * I);
        }
        return;
      }
    }
    gemm<scalar_t>(steps * B, I, GH, dense(dgx, GH), w_ih, 0.f, dx, I);
    for_each_row(
        0, steps * B, I,
        [&](int64_t r) {
          const acc_t* src = dx + r * I;
          std::copy(src, src + I, gi + seq.row(t0 + r / B, r % B) * I);
        },
        kCopyWork);
  }

  // The input rows of steps [t0, t0 + steps) copied into `dst` as one time-major
  // [steps * B, I] matrix, with the steps past each sequence's end zeroed, so that whatever the
  // padding holds (NaN included) cannot reach d(weight_ih) through 0 * x.
  MatrixRef<scalar_t> chunk_input(const scalar_t* x, int64_t t0, int64_t steps,
                                  scalar_t* dst) const {
    const int64_t B = layer.sizes.B, I = layer.sizes.I;
    for_each_row(
        0, steps * B, I,
        [&](int64_t r) {
          const int64_t t = t0 + r / B, b = r % B;
          scalar_t* d = dst + r * I;
          if (!layer.active(t, b)) {
            zero_row(d, I);
          } else {
            const scalar_t* src = x + layer.seq.row(t, b) * I;
            std::copy(src, src + I, d);
          }
        },
        kCopyWork);
    return dense<scalar_t>(dst, I);
  }
};

// sums[j] += column j of a contiguous [rows, W] matrix, for j < W. Blocks of 8 vectors of
// columns are summed down the rows in registers, in parallel (a bias gradient of a large
// layer is a pass over megabytes); the columns past the last full block, row by row.
template <class scalar_t>
void add_column_sums(const scalar_t* m, int64_t rows, int64_t W, at::opmath_type<scalar_t>* sums) {
  using V = VecOf<scalar_t>;
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t kVecs = 8, kWidth = V::size(), kBlock = kVecs * kWidth;
  const int64_t blocks = W / kBlock;
  const int64_t grain = std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(rows * kBlock, 1));
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t block = b0; block < b1; ++block) {
      const int64_t c0 = block * kBlock;
      V acc[kVecs];
      for (int v = 0; v < kVecs; ++v) acc[v] = V(0);
      for (int64_t r = 0; r < rows; ++r) {
        const scalar_t* row = m + r * W + c0;
        for (int v = 0; v < kVecs; ++v) acc[v] = acc[v] + load(row + v * kWidth, kWidth);
      }
      for (int v = 0; v < kVecs; ++v) {
        acc_t* out = sums + c0 + v * kWidth;
        store(out, load(out, kWidth) + acc[v], kWidth);
      }
    }
  });
  const int64_t rest = blocks * kBlock;
  if (rest == W) return;
  for (int64_t r = 0; r < rows; ++r) {
    for_each_chunk<scalar_t>(W - rest, [&](int64_t j, int64_t n) {
      store(sums + rest + j, load(sums + rest + j, n) + load(m + r * W + rest + j, n), n);
    });
  }
}

// sums[c0, c0 + W) as a tensor of the storage type.
template <class scalar_t>
at::Tensor sums_tensor(const std::vector<at::opmath_type<scalar_t>>& sums, int64_t c0, int64_t W,
                       const at::TensorOptions& opts) {
  at::Tensor out = new_tensor({W}, opts);
  scalar_t* o = out.data_ptr<scalar_t>();
  for (int64_t j = 0; j < W; ++j) o[j] = static_cast<scalar_t>(sums[c0 + j]);
  return out;
}

}  // namespace rnnfast::cpu
