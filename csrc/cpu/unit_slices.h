// The hidden units of a step split over the threads, for batches too small to split by rows
// (batch_slices.h): a sequence at a time, whose step mostly reads W_hh. Every thread runs
// every step, for all rows and its range of units: its products over its units' columns of
// W_hh (all gates), so that each core reads its share of the weight from its own cache, then
// its units' pointwise math. The threads meet at a barrier once all have read a step's state
// and again once all have written it.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/ParallelGuard.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <utility>

#include "batch_slices.h"
#include "gemm_cpu.h"

namespace rnnfast::cpu {

// How many threads the units of a step of B rows over T steps are split over (1: no split).
// Only for batches too few rows for batch_slices to split, and with OpenMP as torch's
// backend, whose team the split runs on.
int64_t unit_slice_threads(int64_t B, int64_t T, int64_t H, RecurrentWeights weights);

// Units [j0, j1) of thread `id` of `team` for H units: ranges of whole 16-unit blocks (a
// cache line of float32), so that no two threads write one line of a state row.
std::pair<int64_t, int64_t> unit_range(int64_t H, int64_t team, int64_t id);

// What for_each_unit_slice gives each thread: the team's barrier, and a guard for the work
// between barriers. An exception there is kept for the caller (the first one), and every
// thread then skips the rest of the work but still meets the others at every barrier, so
// that none waits for a thread that has left.
class UnitTeam {
 public:
  UnitTeam(std::atomic<bool>& failed, std::exception_ptr& error, std::mutex& error_mutex)
      : failed_(failed), error_(error), error_mutex_(error_mutex) {}

  template <class F>
  void work(const F& f) const {
    if (failed_.load(std::memory_order_relaxed)) return;
    try {
      f();
    } catch (...) {
      const std::lock_guard<std::mutex> lock(error_mutex_);
      if (!error_) error_ = std::current_exception();
      failed_ = true;
    }
  }

  void barrier() const {
#ifdef _OPENMP
#pragma omp barrier
#endif
  }

 private:
  std::atomic<bool>& failed_;
  std::exception_ptr& error_;
  std::mutex& error_mutex_;
};

// Runs f(j0, j1, team) on a team of `threads` (what OpenMP grants), each thread with its
// units [j0, j1) of H (unit_range) and BLAS held to it.
template <class F>
void for_each_unit_slice(int64_t H, int64_t threads, const F& f) {
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
#ifdef _OPENMP
#pragma omp parallel num_threads(static_cast<int>(threads))
  {
    // As at::parallel_for: parallel loops inside run inline.
    const c10::ParallelGuard in_parallel(true);
    const SingleThreadedBlas one_thread;
    const auto [j0, j1] = unit_range(H, omp_get_num_threads(), omp_get_thread_num());
    f(j0, j1, UnitTeam(failed, error, error_mutex));
  }
#else
  (void)threads;
  f(int64_t(0), H, UnitTeam(failed, error, error_mutex));
#endif
  if (error) std::rethrow_exception(error);
}

// For the tests: the least recurrent weight (bytes) that unit_slice_threads splits; returns
// the previous value.
int64_t set_unit_slice_min_weight_bytes(int64_t bytes);

}  // namespace rnnfast::cpu
