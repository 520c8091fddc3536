// The Python module rnnfast._C. Importing it runs the op registrations; it also offers direct,
// typed entries to the forward ops for eager calls (a layer's direction, a stack of layers, a
// cell's single step), which skip the boxed argument parsing of torch.ops (about half the
// fixed cost of a small layer). The calls still go through the dispatcher, so autograd,
// autocast and dispatch modes apply as for torch.ops. Under no_grad they ask the op not to keep
// what only a backward would read.
// Also the CPU scratch pool (_empty_cpu_cache, _cpu_idle_scratch_bytes) and test hooks:
// _cpu_batch_slices, _cpu_unit_slice_threads / _set_cpu_unit_slice_min_weight_bytes,
// _cpu_step_gemm / _set_cpu_step_gemm, _cpu_panel_gemm, and the CUDA engine run on the host
// (_cuda_engine_forward_on_host, _cuda_engine_backward_on_host).
// Only the pip build compiles this file: the CMake library for libtorch users has no Python.
#include <torch/extension.h>

#include "../cpu/batch_slices.h"
#include "../cpu/panel_gemm.h"
#include "../cpu/scratch_pool.h"
#include "../cpu/unit_slices.h"
#include "../cuda/on_host/recurrence_on_host.h"
#include "../op_handles.h"
#include "scan_engine_bindings.h"

namespace {

using at::Tensor;
using std::optional;

// Calls of fewer multiply-adds (about 40 us) keep the GIL: handing it over and taking it back
// cost 0.3 us of the 11 us of a small layer's forward (B = 8, T = 20, H = 32), and other Python
// threads lose nothing by waiting that long (Python switches threads every 5 ms). Larger calls
// release it, so that other threads run meanwhile.
constexpr int64_t kReleaseGilMacs = int64_t{1} << 20;

// The GIL released for the guard's life where the call has at least kReleaseGilMacs
// multiply-adds: `rows` rows (steps times batch) through weights of `weight_elements` in all.
class GilReleasedForLargeCalls {
 public:
  GilReleasedForLargeCalls(int64_t rows, int64_t weight_elements) {
    if (rows * weight_elements >= kReleaseGilMacs) released_.emplace();
  }

 private:
  optional<pybind11::gil_scoped_release> released_;
};

// Rows of an input [..., I]: steps times batch entries, or the batch of a cell's step.
int64_t input_rows(const Tensor& input) {
  return input.dim() > 0 && input.size(-1) > 0 ? input.numel() / input.size(-1) : input.numel();
}

// Returns (output, h_n, c_n): what the op saves for backward stays in C++ (its Python object
// would cost a wrap and a GC-tracked allocation at every call).
std::tuple<Tensor, Tensor, Tensor> recurrent_forward(
    const Tensor& input, const Tensor& weight_ih, const Tensor& weight_hh,
    const optional<Tensor>& bias_ih, const optional<Tensor>& bias_hh, const optional<Tensor>& hx,
    const optional<Tensor>& cx, const optional<Tensor>& weight_hr, const optional<Tensor>& lengths,
    const std::string& cell, bool reverse, bool batch_first) {
  const GilReleasedForLargeCalls gil(input_rows(input), weight_ih.numel() + weight_hh.numel());
  auto [output, h_n, c_n, saved] = rnnfast::forward_op().call(
      input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx, weight_hr, lengths, cell, reverse,
      batch_first, /*need_saved=*/rnnfast::need_saved_without_graph());
  return {std::move(output), std::move(h_n), std::move(c_n)};
}

// One step of a cell (RNNCell, GRUCell, LSTMCell): the op over a single time step, with the
// step's time dimension added and dropped here rather than by two Python tensor calls (each
// about 1 us, as much as the rest of a small step).
// input [B, I]; hx [B, H] or None; cx [B, H] or None (LSTM only).
// Returns (h' [B, H], c' [B, H] for LSTM, else empty).
std::tuple<Tensor, Tensor> cell_forward(const Tensor& input, const Tensor& weight_ih,
                                        const Tensor& weight_hh, const optional<Tensor>& bias_ih,
                                        const optional<Tensor>& bias_hh,
                                        const optional<Tensor>& hx, const optional<Tensor>& cx,
                                        const std::string& cell) {
  TORCH_CHECK(input.dim() == 2, "rnnfast: a cell's input must be 2-D [B, I]; got ", input.dim(),
              "-D");
  const GilReleasedForLargeCalls gil(input_rows(input), weight_ih.numel() + weight_hh.numel());
  auto [output, h_next, c_next, saved] = rnnfast::forward_op().call(
      input.unsqueeze(0), weight_ih, weight_hh, bias_ih, bias_hh, hx, cx,
      /*weight_hr=*/std::nullopt, /*lengths=*/std::nullopt, cell, /*reverse=*/false,
      /*batch_first=*/false, /*need_saved=*/rnnfast::need_saved_without_graph());
  return {std::move(h_next), std::move(c_next)};
}

// A stack of layers (rnnfast::recurrent_layers); weights as a Python list of tensors or None.
std::tuple<Tensor, Tensor, Tensor> recurrent_layers(
    const Tensor& input, const std::vector<optional<Tensor>>& weights, const optional<Tensor>& hx,
    const optional<Tensor>& cx, const optional<Tensor>& lengths, const std::string& cell,
    bool bidirectional, bool batch_first, double dropout) {
  c10::List<optional<Tensor>> weight_list;
  weight_list.reserve(weights.size());
  int64_t weight_elements = 0;
  for (const auto& w : weights) {
    weight_list.push_back(w);
    if (w.has_value()) weight_elements += w->numel();
  }
  const GilReleasedForLargeCalls gil(input_rows(input), weight_elements);
  return rnnfast::layers_op().call(input, weight_list, hx, cx, lengths, cell, bidirectional,
                                   batch_first, dropout);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  rnnfast::bind_scan_engine(m);
  m.def("recurrent_forward", &recurrent_forward,
        "rnnfast::recurrent_forward, called directly (eager mode only)");
  m.def("recurrent_layers", &recurrent_layers,
        "rnnfast::recurrent_layers, called directly (eager mode only)");
  m.def("cell_forward", &cell_forward,
        "one step of a cell through rnnfast::recurrent_forward (eager mode only)");
  // For the tests: how the CPU engine would split a batch over the current threads.
  m.def(
      "_cpu_batch_slices",
      [](int64_t B, int64_t T, int64_t weight_elements, int64_t weight_bytes) {
        const auto slices = rnnfast::cpu::batch_slices(B, T, {weight_elements, weight_bytes});
        return std::make_tuple(slices.count, slices.rows);
      },
      "(count, rows) of the batch slices of B rows over T steps with the given recurrent weights");
  // For the tests: over how many threads the CPU engine would split a step's units, and the
  // least weight it splits.
  m.def(
      "_cpu_unit_slice_threads",
      [](int64_t B, int64_t T, int64_t H, int64_t weight_elements, int64_t weight_bytes) {
        return rnnfast::cpu::unit_slice_threads(B, T, H, {weight_elements, weight_bytes});
      },
      "threads over which the units of a step of B rows and H units are split (1: not split)");
  m.def("_set_cpu_unit_slice_min_weight_bytes", &rnnfast::cpu::set_unit_slice_min_weight_bytes,
        "sets the least recurrent weight (bytes) whose units are split; returns the previous");
  m.def("_empty_cpu_cache", &rnnfast::cpu::release_idle_scratch,
        "frees the CPU scratch pool's idle buffers; returns the bytes freed");
  m.def("_cpu_idle_scratch_bytes", &rnnfast::cpu::idle_scratch_bytes,
        "bytes the CPU scratch pool holds idle");
  // For the tests: which code runs the CPU engine's float32 products.
  m.def("_cpu_step_gemm", [] {
    return rnnfast::cpu::step_gemm() == rnnfast::cpu::StepGemm::kPanels ? "panels" : "blas";
  });
  m.def(
      "_cpu_panel_gemm",
      [](const Tensor& A, const Tensor& B, Tensor& C, bool accumulate) {
        TORCH_CHECK(A.dim() == 2 && B.dim() == 2 && C.dim() == 2 && A.size(1) == B.size(0) &&
                        C.size(0) == A.size(0) && C.size(1) == B.size(1),
                    "_cpu_panel_gemm: expected A [M, K], B [K, N], C [M, N]");
        TORCH_CHECK(A.scalar_type() == at::kFloat && B.scalar_type() == at::kFloat &&
                        C.scalar_type() == at::kFloat && C.stride(1) == 1,
                    "_cpu_panel_gemm: expected float32 tensors, C with unit column stride");
        Tensor a_storage, b_storage;
        const auto a = rnnfast::cpu::matrix_ref<float>(A, a_storage);
        const auto b = rnnfast::cpu::matrix_ref<float>(B, b_storage);
        rnnfast::cpu::PanelMatrix(B.size(1), B.size(0), b)
            .multiply(A.size(0), a, accumulate, C.data_ptr<float>(), C.stride(0));
      },
      "C = A B (+ C if accumulate) through the CPU engine's panel product");
  // For the tests: the CUDA engine's step loop and kernel bodies on CPU tensors, with the
  // arguments of the ops recurrent_forward and recurrent_backward.
  m.def("_cuda_engine_forward_on_host", &rnnfast::cuda_on_host::recurrent_forward);
  m.def("_cuda_engine_backward_on_host", &rnnfast::cuda_on_host::recurrent_backward);
  m.def("_set_cpu_step_gemm", [](const std::string& name) {
    TORCH_CHECK(name == "blas" || name == "panels",
                "_set_cpu_step_gemm: expected 'blas' or 'panels', got '", name, "'");
    rnnfast::cpu::set_step_gemm(name == "panels" ? rnnfast::cpu::StepGemm::kPanels
                                                 : rnnfast::cpu::StepGemm::kBlas);
  });
}
