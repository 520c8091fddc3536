// rnnfast._C._testing: the CPU engine's batch and unit splits and its choice of step
// products, its panel product alone, the CUDA engine run on the host (cuda/on_host/), and the
// scan engine's batch slices.
// Only the pip build compiles this file, as python_module.cpp.
#include "testing_module.h"

#include <ATen/ATen.h>
#include <torch/csrc/utils/pybind.h>

#include "../cpu/batch_slices.h"
#include "../cpu/panel_gemm.h"
#include "../cpu/unit_slices.h"
#include "../cuda/on_host/recurrence_on_host.h"
#include "../scan/differentiable_scan.h"
#include "../scan/program_registry.h"
#include "../scan/scan_ops.h"

namespace rnnfast {
namespace {

using at::Tensor;

// C = A B (+ C if accumulate) through the CPU engine's panel product.
void panel_gemm(const Tensor& A, const Tensor& B, Tensor& C, bool accumulate) {
  TORCH_CHECK_VALUE(A.dim() == 2 && B.dim() == 2 && C.dim() == 2 && A.size(1) == B.size(0) &&
                        C.size(0) == A.size(0) && C.size(1) == B.size(1),
                    "cpu_panel_gemm: expected A [M, K], B [K, N], C [M, N]");
  TORCH_CHECK_TYPE(A.scalar_type() == at::kFloat && B.scalar_type() == at::kFloat &&
                       C.scalar_type() == at::kFloat,
                   "cpu_panel_gemm: expected float32 tensors");
  TORCH_CHECK_VALUE(C.stride(1) == 1, "cpu_panel_gemm: expected C with unit column stride");
  Tensor a_storage, b_storage;
  const auto a = cpu::matrix_ref<float>(A, a_storage);
  const auto b = cpu::matrix_ref<float>(B, b_storage);
  cpu::PanelMatrix(B.size(1), B.size(0), b)
      .multiply(A.size(0), a, accumulate, C.data_ptr<float>(), C.stride(0));
}

void set_step_gemm(const std::string& name) {
  TORCH_CHECK_VALUE(name == "blas" || name == "panels",
                    "set_cpu_step_gemm: expected 'blas' or 'panels', got '", name, "'");
  cpu::set_step_gemm(name == "panels" ? cpu::StepGemm::kPanels : cpu::StepGemm::kBlas);
}

}  // namespace

void define_testing_module(pybind11::module_& parent) {
  pybind11::module_ m = parent.def_submodule("_testing", "hooks for rnnfast's tests");
  m.def(
      "cpu_batch_slices",
      [](int64_t B, int64_t T, int64_t weight_elements, int64_t weight_bytes) {
        const auto slices = cpu::batch_slices(B, T, {weight_elements, weight_bytes});
        return std::make_tuple(slices.count, slices.rows);
      },
      "(count, rows) of the batch slices of B rows over T steps with the given recurrent weights");
  m.def(
      "cpu_unit_slice_threads",
      [](int64_t B, int64_t T, int64_t H, int64_t weight_elements, int64_t weight_bytes) {
        return cpu::unit_slice_threads(B, T, H, {weight_elements, weight_bytes});
      },
      "threads over which the units of a step of B rows and H units are split (1: not split)");
  m.def("set_cpu_unit_slice_min_weight_bytes", &cpu::set_unit_slice_min_weight_bytes,
        "sets the least recurrent weight (bytes) whose units are split; returns the previous");
  m.def(
      "cpu_step_gemm",
      [] { return cpu::step_gemm() == cpu::StepGemm::kPanels ? "panels" : "blas"; },
      "which code runs the CPU engine's float32 step products: 'panels' or 'blas'");
  m.def("set_cpu_step_gemm", &set_step_gemm,
        "makes 'panels' or 'blas' run the CPU engine's float32 step products");
  m.def("scan_registered_programs", &scan::registered_programs,
        "how many scan programs are registered");
  m.def("scan_last_run_slices", &scan::last_run_slices,
        "how many batch slices the scan engine's last run gave threads of their own");
  m.def("scan_differentiable_backward_runs", &scan::differentiable_backward_runs,
        "how many backward loops rnnfast.scan's C++ autograd nodes have run");
  m.def("cpu_panel_gemm", &panel_gemm,
        "C = A B (+ C if accumulate) through the CPU engine's panel product");
  // The CUDA engine's step loop and kernel bodies on CPU tensors, with the arguments of the
  // ops recurrent_forward and recurrent_backward.
  m.def("cuda_engine_forward_on_host", &cuda_on_host::recurrent_forward);
  m.def("cuda_engine_backward_on_host", &cuda_on_host::recurrent_backward);
}

}  // namespace rnnfast
