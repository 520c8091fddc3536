// Rows of the per-step tensors of the CPU engine: their addresses in the caller's layout
// ([T, B, X] or [B, T, X]), the loops over a step's batch rows, and the tensors handed back.
#pragma once

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace rnnfast::cpu {

// Maps a (step, batch entry) pair to its row of a [T, B, X] or [B, T, X] tensor.
struct Seq {
  int64_t T, B;
  bool batch_first;
  int64_t row(int64_t t, int64_t b) const { return batch_first ? b * T + t : t * B + b; }
  // Rows between batch entries b and b + 1 at one step: the GEMM leading-dimension factor.
  int64_t batch_step() const { return batch_first ? T : 1; }
};

// The rows of a [T, B, X] or [B, T, X] tensor by (step, batch entry), with any strides along
// T and B and unit stride along X.
template <class T>
struct StridedRows {
  const T* data;
  int64_t stride_t, stride_b;
  const T* row(int64_t t, int64_t b) const { return data + t * stride_t + b * stride_b; }
};

// Tensors handed to the caller, made without a dispatcher call, which costs more than the
// allocation itself at a small layer's sizes (a call makes four to eight).
inline at::Tensor new_tensor(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  return at::detail::empty_cpu(sizes, opts.dtype().toScalarType(), /*pin_memory=*/false,
                               std::nullopt);
}

inline at::Tensor new_zeros(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  at::Tensor t = new_tensor(sizes, opts);
  if (t.nbytes() > 0) std::memset(t.data_ptr(), 0, t.nbytes());
  return t;
}

template <class T>
void zero_row(T* p, int64_t n) {
  std::fill(p, p + n, T(0));
}

// Runs f(b) for the batch rows b in [b0, b1), in parallel where a step's pointwise work is
// large enough to pay for waking the other threads (the GEMMs are threaded by BLAS itself):
// from about 8k gate values a step, 4k a thread. Large layers gain twice: their outputs are
// fresh memory, whose page faults are then taken on every thread instead of one.
// Inside a batch slice it runs on the calling thread. Rows too few to split run here
// without asking at::parallel_for, whose thread-local guards and checks cost about as much as a
// small step's pointwise work.
// Plain row copies pass a larger `work` (elements per thread): a copy is cheap per element.
template <class F>
void for_each_row(int64_t b0, int64_t b1, int64_t width, const F& f, int64_t work = 1 << 12) {
  const int64_t grain = std::max<int64_t>(1, work / std::max<int64_t>(width, 1));
  if (b1 - b0 <= grain) {
    for (int64_t b = b0; b < b1; ++b) f(b);
    return;
  }
  at::parallel_for(b0, b1, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t b = r0; b < r1; ++b) f(b);
  });
}

// Elements of a row copy per thread: below this, waking another thread costs more than it saves.
constexpr int64_t kCopyWork = 1 << 15;

}  // namespace rnnfast::cpu
