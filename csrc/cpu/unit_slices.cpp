#include "unit_slices.h"

#include <algorithm>

namespace rnnfast::cpu {
namespace {

// Unit slices: for fewer rows than a GEMM's row block of panels (kPanelRows, gemm_cpu.cpp),
// whose per-row products read the weight's columns as they lie (and fewer than two batch
// slices take: kMinSliceRows each, batch_slices.cpp), from weights this large (a GRU's W_hh
// with H = 209). Below that a thread's share is already cached and the split gains little.
constexpr int64_t kMaxUnitSliceRows = 7;
std::atomic<int64_t> min_unit_slice_weight_bytes{int64_t(1) << 19};
// ... and only where a step's product would run on one thread: from this many multiply-adds
// (kThreadedGemmMacs, gemm_cpu.cpp) it is packed and split over the threads by columns
// anyway, and the unit split ran longer there.
constexpr int64_t kMaxUnitSliceMacs = int64_t(1) << 20;
// Steps enough to repay starting the team (about as much as a step).
constexpr int64_t kMinUnitSliceSteps = 16;
constexpr int64_t kUnitBlock = 16;
// Units a thread takes at least: the team meets twice a step, which must stay small beside a
// thread's share of the products.
constexpr int64_t kMinThreadUnits = 64;

#if AT_PARALLEL_OPENMP && defined(_OPENMP)
constexpr bool kUnitSlicesRun = true;
#else
constexpr bool kUnitSlicesRun = false;
#endif

}  // namespace

int64_t unit_slice_threads(int64_t B, int64_t T, int64_t H, RecurrentWeights weights) {
  if (!kUnitSlicesRun || at::in_parallel_region()) return 1;
  if (B > kMaxUnitSliceRows || T < kMinUnitSliceSteps ||
      B * weights.elements >= kMaxUnitSliceMacs ||
      weights.bytes < min_unit_slice_weight_bytes.load()) {
    return 1;
  }
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), H / kMinThreadUnits);
  return threads >= 2 ? threads : 1;
}

int64_t set_unit_slice_min_weight_bytes(int64_t bytes) {
  return min_unit_slice_weight_bytes.exchange(bytes);
}

std::pair<int64_t, int64_t> unit_range(int64_t H, int64_t team, int64_t id) {
  const int64_t blocks = (H + kUnitBlock - 1) / kUnitBlock;
  const int64_t per_thread = (blocks + team - 1) / team * kUnitBlock;
  const int64_t j0 = std::min(H, id * per_thread);
  return {j0, std::min(H, j0 + per_thread)};
}

}  // namespace rnnfast::cpu
