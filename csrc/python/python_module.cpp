// The Python module rnnfast._C. Importing it runs the op registrations; it also offers direct,
// typed entries to the forward ops for eager calls (a layer's direction, a stack of layers, a
// cell's single step), which skip the boxed argument parsing of torch.ops (about half the
// fixed cost of a small layer). The calls still go through the dispatcher, so autograd,
// autocast and dispatch modes apply as for torch.ops. Under no_grad they ask the op not to keep
// what only a backward would read.
// Also the cell registry (cells), the CPU scratch pool (_empty_cpu_cache,
// _cpu_idle_scratch_bytes) and, in the submodule _testing (testing_module.h), the tests' hooks.
// Only the pip build compiles this file: the CMake library for libtorch users has no Python.
#include <ATen/ATen.h>
#include <torch/csrc/utils/pybind.h>

#include "../cell_registry.h"
#include "../cpu/scratch_pool.h"
#include "../op_handles.h"
#include "gil_release.h"
#include "scan_engine_bindings.h"
#include "scan_shortcut.h"
#include "testing_module.h"

namespace {

using at::Tensor;
using rnnfast::GilReleasedForLargeCalls;
using std::optional;

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
                                        const optional<Tensor>& bias_hh, const optional<Tensor>& hx,
                                        const optional<Tensor>& cx, const std::string& cell) {
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

// The registry's traits by cell name, for the fake kernels of rnnfast/_ops.py.
pybind11::dict cells() {
  using namespace pybind11::literals;
  pybind11::dict out;
  for (const rnnfast::CellSpec& spec : rnnfast::kCellSpecs) {
    out[spec.name] = pybind11::dict("gates"_a = spec.gates, "saved"_a = spec.saved,
                                    "recurrent_bias_from"_a = spec.recurrent_bias_from,
                                    "reset_before"_a = spec.reset_before,
                                    "has_cell_state"_a = spec.has_cell_state);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  rnnfast::bind_scan_engine(m);
  rnnfast::bind_scan_shortcut(m);
  m.def("recurrent_forward", &recurrent_forward,
        "rnnfast::recurrent_forward, called directly (eager mode only)");
  m.def("recurrent_layers", &recurrent_layers,
        "rnnfast::recurrent_layers, called directly (eager mode only)");
  m.def("cell_forward", &cell_forward,
        "one step of a cell through rnnfast::recurrent_forward (eager mode only)");
  m.def("_empty_cpu_cache", &rnnfast::cpu::release_idle_scratch,
        "frees the CPU scratch pool's idle buffers; returns the bytes freed");
  m.def("_cpu_idle_scratch_bytes", &rnnfast::cpu::idle_scratch_bytes,
        "bytes the CPU scratch pool holds idle");
  m.def("cells", &cells,
        "the cell registry (csrc/cell_registry.h): cell name -> dict of gates, saved, "
        "recurrent_bias_from, reset_before, has_cell_state");
  rnnfast::define_testing_module(m);
}
