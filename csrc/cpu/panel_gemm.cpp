#include "panel_gemm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "register_block.h"
#include "scratch_pool.h"

namespace rnnfast::cpu {
namespace {

using Vec = at::vec::Vectorized<float>;
// Two vectors of columns per panel, the width of column_block (register_block.h): with 4 rows,
// 8 independent accumulators cover the FMA latency, and every loaded element of B feeds 4 FMAs.
constexpr int64_t kPanelWidth = 2 * Vec::size();
// The least work (multiply-adds, or elements copied into panels) worth handing to another
// thread; products under kThreadedMacs stay on the calling thread, as gemm_cpu.cpp's do (the
// next step's pointwise loop would read the other core's share of the output).
constexpr int64_t kTaskMacs = 1 << 17;
constexpr int64_t kThreadedMacs = 1 << 20;
constexpr int64_t kPackTaskElements = 1 << 16;

bool cpu_is_intel() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(0, &eax, &ebx, &ecx, &edx) == 0) return false;
  char vendor[13] = {};
  std::memcpy(vendor, &ebx, 4);
  std::memcpy(vendor + 4, &edx, 4);
  std::memcpy(vendor + 8, &ecx, 4);
  return std::string(vendor) == "GenuineIntel";
#else
  return false;
#endif
}

StepGemm default_step_gemm() {
  if (const char* wanted = std::getenv("RNNFAST_CPU_STEP_GEMM")) {
    const std::string name(wanted);
    if (name == "blas") return StepGemm::kBlas;
    if (name == "panels") return StepGemm::kPanels;
    TORCH_WARN("RNNFAST_CPU_STEP_GEMM must be 'blas' or 'panels'; got '", name,
               "', which is ignored");
  }
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  return cpu_is_intel() ? StepGemm::kBlas : StepGemm::kPanels;
#else
  return StepGemm::kBlas;
#endif
}

std::atomic<StepGemm>& step_gemm_choice() {
  static std::atomic<StepGemm> choice{default_step_gemm()};
  return choice;
}

// Rows [i0, i1) of column panel p.
template <bool kTransA>
void multiply_panel(int64_t p, int64_t i0, int64_t i1, int64_t N, int64_t K, MatrixRef<float> A,
                    const float* panels, bool accumulate, float* C, int64_t ldc) {
  const float* a = A.data + (kTransA ? i0 : i0 * A.ld);
  column_block<kTransA, /*kPaddedB=*/true>(i1 - i0, K, a, A.ld, panels + p * K * kPanelWidth,
                                           kPanelWidth, std::min(kPanelWidth, N - p * kPanelWidth),
                                           accumulate, C + i0 * ldc + p * kPanelWidth, ldc);
}

}  // namespace

StepGemm step_gemm() { return step_gemm_choice().load(std::memory_order_relaxed); }

void set_step_gemm(StepGemm choice) { step_gemm_choice().store(choice, std::memory_order_relaxed); }

PanelMatrix::PanelMatrix(int64_t N, int64_t K, MatrixRef<float> B) : N_(N), K_(K) {
  const int64_t count = (N + kPanelWidth - 1) / kPanelWidth;
  panels_ = scratch_empty({count, K, kPanelWidth}, at::kFloat);
  float* out = panels_.data_ptr<float>();
  // B(k, n) is B.data[k * ld + n], or B.data[n * ld + k] where transposed: then each column
  // is read in order and scattered down its panel (which stays in L1), not gathered across
  // the rows of B.
  const auto pack = [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n0 = p * kPanelWidth, width = std::min(kPanelWidth, N - n0);
      float* panel = out + p * K * kPanelWidth;
      if (width < kPanelWidth) std::fill(panel, panel + K * kPanelWidth, 0.f);
      if (B.trans) {
        for (int64_t j = 0; j < width; ++j) {
          const float* column = B.data + (n0 + j) * B.ld;
          for (int64_t k = 0; k < K; ++k) panel[k * kPanelWidth + j] = column[k];
        }
      } else {
        for (int64_t k = 0; k < K; ++k) {
          std::memcpy(panel + k * kPanelWidth, B.data + k * B.ld + n0, width * sizeof(float));
        }
      }
    }
  };
  // at::parallel_for runs inline inside a parallel region (a batch slice packing its own).
  const int64_t panel_elements = std::max<int64_t>(K * kPanelWidth, 1);
  at::parallel_for(0, count, std::max<int64_t>(1, kPackTaskElements / panel_elements), pack);
}

void PanelMatrix::multiply(int64_t M, MatrixRef<float> A, bool accumulate, float* C,
                           int64_t ldc) const {
  const int64_t count = (N_ + kPanelWidth - 1) / kPanelWidth;  // panels_ is [0] where K = 0
  if (M == 0 || count == 0) return;
  const float* panels = panels_.const_data_ptr<float>();
  // Tasks are (panel, row range) pairs, panel-major; rows are split only where the panels
  // alone are too few for the threads (a weight gradient of few columns).
  const int64_t threads =
      at::in_parallel_region() || M * N_ * K_ < kThreadedMacs ? 1 : at::get_num_threads();
  const int64_t row_splits =
      std::min((2 * threads + count - 1) / count, (M + kBlockRows - 1) / kBlockRows);
  const int64_t task_rows =
      ((M + row_splits - 1) / row_splits + kBlockRows - 1) / kBlockRows * kBlockRows;
  const int64_t tasks_per_panel = (M + task_rows - 1) / task_rows;
  const int64_t tasks = count * tasks_per_panel;
  const int64_t task_macs = std::max<int64_t>(task_rows * K_ * kPanelWidth, 1);
  const int64_t grain = std::max<int64_t>(1, kTaskMacs / task_macs);
  const auto run = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t p = t / tasks_per_panel, i0 = t % tasks_per_panel * task_rows;
      const int64_t i1 = std::min(M, i0 + task_rows);
      if (A.trans) {
        multiply_panel<true>(p, i0, i1, N_, K_, A, panels, accumulate, C, ldc);
      } else {
        multiply_panel<false>(p, i0, i1, N_, K_, A, panels, accumulate, C, ldc);
      }
    }
  };
  if (threads == 1 || tasks <= grain) {
    run(0, tasks);
  } else {
    at::parallel_for(0, tasks, grain, run);
  }
}

}  // namespace rnnfast::cpu
