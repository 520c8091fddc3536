// The batch rows split into slices that threads run as independent recurrences.
//
// A row's state depends on nothing but the same row's past, so one thread can take its slice
// through a whole chunk of steps alone: the recurrent GEMMs on its rows, single-threaded, then
// their pointwise math, with no synchronisation until the chunk ends. Splitting each step
// instead (BLAS across the gate columns, the pointwise pass across the rows) costs two
// fork/joins a step, and each core then reads state rows that the other one wrote.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "gemm_cpu.h"

namespace rnnfast::cpu {

struct BatchSlices {
  int64_t count = 1;
  int64_t rows = 0;  // rows of every slice but the last, which may have fewer
  int64_t begin(int64_t i) const { return i * rows; }
  int64_t end(int64_t i, int64_t B) const { return std::min(B, (i + 1) * rows); }
};

// The weights that every step multiplies (W_hh, and W_hr if any).
struct RecurrentWeights {
  int64_t elements;
  int64_t bytes;
};

// Below this many recurrent multiply-adds per call, waking the other threads costs more than
// the split saves (the fused engine's steps: its products and a pointwise pass).
constexpr int64_t kMinSplitMacs = 1 << 21;

// How a batch of B rows running T steps is split, on the threads at::get_num_threads() allows
// (one slice, the whole batch, inside a parallel region; and where the call has fewer than
// min_split_macs multiply-adds of `weights`).
BatchSlices batch_slices(int64_t B, int64_t T, RecurrentWeights weights,
                         int64_t min_split_macs = kMinSplitMacs);

// Runs f(i) for every slice i: on the calling thread for a single slice, else one slice per
// thread with BLAS held to that thread.
template <class F>
void for_each_slice(const BatchSlices& slices, const F& f) {
  if (slices.count == 1) {
    f(0);
    return;
  }
  at::parallel_for(0, slices.count, 1, [&](int64_t i0, int64_t i1) {
    const SingleThreadedBlas one_thread;
    for (int64_t i = i0; i < i1; ++i) f(i);
  });
}

}  // namespace rnnfast::cpu
