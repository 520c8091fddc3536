// rnnfast's own float32 GEMM, C[M, N] (+)= op(A)[M, K] B[K, N], with B (a recurrent weight
// for every step, or the right operand of one large product) copied into column panels that
// a register-blocked loop reads in order.
//
// Why not MKL everywhere: on CPUs other than Intel's, MKL runs its generic code path. On a
// Zen 4 core its packed product of an LSTM step slice (16 x 1024 x 256) ran at 75-80 GF/s,
// this loop at 110-115 GF/s (close to the core's peak), and torch.nn's LSTM (oneDNN) was
// faster than rnnfast there. On Intel's CPUs MKL stays the default.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "matrix_ref.h"

namespace rnnfast::cpu {

// Which code runs the CPU engine's float32 products: MKL, or these panels.
enum class StepGemm { kBlas, kPanels };

// The choice of this process: RNNFAST_CPU_STEP_GEMM=blas or =panels if set, else panels
// where the build has AVX2 or AVX-512 vectors and the CPU is not Intel's.
StepGemm step_gemm();
// For the tests: changes the choice for later products (a call in flight may then run some
// of its products each way; both are correct).
void set_step_gemm(StepGemm choice);

class PanelMatrix {
 public:
  PanelMatrix() = default;
  // op(B) is [K, N]; it is copied, so B may change or go after this returns.
  PanelMatrix(int64_t N, int64_t K, MatrixRef<float> B);
  bool defined() const { return panels_.defined(); }
  // C[M, N] = op(A)[M, K] B + (accumulate ? C : 0). Split over the threads (by column
  // panels, and by rows where the panels are too few) unless called inside a parallel region.
  void multiply(int64_t M, MatrixRef<float> A, bool accumulate, float* C, int64_t ldc) const;

 private:
  int64_t N_ = 0, K_ = 0;
  at::Tensor panels_;  // [ceil(N / width), K, width] for width kPanelWidth, zero beyond N
};

}  // namespace rnnfast::cpu
