#include "batch_slices.h"

namespace rnnfast::cpu {
namespace {

// The fewest rows worth a slice: a row block of the GEMMs (kBlockRows, register_block.h).
constexpr int64_t kMinSliceRows = 4;
// Every slice reads all of the weights at every step: from its core's L2 cache where they fit
// (1 MiB is W_hh of an LSTM with H = 256). Larger weights are split only into slices tall
// enough for their GEMMs to be bound by arithmetic rather than by reading the weights.
constexpr int64_t kCachedWeightBytes = 1 << 20;
constexpr int64_t kTallSliceRows = 64;

// With torch's OpenMP backend, at::parallel_for (a header template) runs serially in a file
// compiled without OpenMP (RNNFAST_OPENMP=0): slices would run one after another, each with
// BLAS held to one thread.
#if AT_PARALLEL_OPENMP && !defined(_OPENMP)
constexpr bool kSlicesRunInParallel = false;
#else
constexpr bool kSlicesRunInParallel = true;
#endif

}  // namespace

BatchSlices batch_slices(int64_t B, int64_t T, RecurrentWeights weights, int64_t min_split_macs) {
  if (!kSlicesRunInParallel || at::in_parallel_region()) return {1, B};
  const int64_t threads = at::get_num_threads();
  int64_t count = std::min<int64_t>(threads, B / kMinSliceRows);
  if (weights.bytes > kCachedWeightBytes) count = std::min(count, B / kTallSliceRows);
  if (count <= 1 || B * T * weights.elements < min_split_macs) return {1, B};
  const int64_t rows = (B + count - 1) / count;
  return {(B + rows - 1) / rows, rows};
}

}  // namespace rnnfast::cpu
