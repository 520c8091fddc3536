// rnnfast::mm's CPU kernel (schema: ops.cpp): the engine's GEMM (gemm_cpu.h) over whole
// operands, so that rnnfast.scan's products over all steps (x @ W for every x_t, and their
// gradients) run where the fused layers' do: on rnnfast's panels for float32 where those beat
// the BLAS, else straight into the BLAS with no copy of transposed operands.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <optional>

#include "../checks.h"
#include "gemm_cpu.h"
#include "matrix_ref.h"

namespace rnnfast::cpu {
namespace {

// self [M, K], mat2 [K, N] (any strides), bias broadcastable to [M, N] -> [M, N] contiguous.
at::Tensor mm_cpu(const at::Tensor& self, const at::Tensor& mat2,
                  const std::optional<at::Tensor>& bias) {
  check_mm_args(self, mat2, bias);
  const at::ScalarType dtype = self.scalar_type();
  if (dtype != at::kFloat && dtype != at::kDouble) {
    // gemm's 16-bit products leave float32 sums: ATen's own kernels round them as torch does.
    return bias.has_value() ? at::addmm(*bias, self, mat2) : at::mm(self, mat2);
  }
  const int64_t M = self.size(0), K = self.size(1), N = mat2.size(1);
  at::Tensor out = at::empty({M, N}, self.options());
  if (bias.has_value()) {
    out.copy_(bias->expand({M, N}));
  } else if (K == 0) {
    out.zero_();
  }
  if (M == 0 || N == 0 || K == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(dtype, "rnnfast::mm", [&] {
    at::Tensor self_copy, mat2_copy;  // contiguous copies, only where the strides ask for one
    gemm<scalar_t>(M, N, K, matrix_ref<scalar_t>(self, self_copy),
                   matrix_ref<scalar_t>(mat2, mat2_copy), bias.has_value() ? 1.f : 0.f,
                   out.data_ptr<scalar_t>(), N);
  });
  return out;
}

}  // namespace
}  // namespace rnnfast::cpu

TORCH_LIBRARY_IMPL(rnnfast, CPU, m) { m.impl("mm", &rnnfast::cpu::mm_cpu); }
