#include "scan_engine_bindings.h"

#include "../scan/scan_engine.h"

namespace rnnfast {

void bind_scan_engine(pybind11::module_& m) {
  using namespace pybind11::literals;
  using scan::ScanEngine;
  pybind11::class_<ScanEngine>(m, "ScanEngine",
                               "A scan program's loop part (rnnfast/_scan/lower.py), decoded once")
      .def(pybind11::init<const std::vector<int64_t>&, std::vector<double>>(), "codes"_a,
           "scalars"_a)
      .def(
          "forward",
          [](const ScanEngine& engine, const std::vector<at::Tensor>& carry,
             const std::vector<at::Tensor>& seqs, const std::vector<at::Tensor>& weights,
             const std::optional<at::Tensor>& mask, int64_t T, bool reverse, bool keep_states,
             bool gradient) {
            scan::ScanForward out;
            {
              const pybind11::gil_scoped_release released;
              out = engine.forward(carry, seqs, weights, mask, T, reverse, keep_states, gradient);
            }
            return std::make_tuple(out.final_carry, out.boundary, out.states, out.accumulators,
                                   out.slices);
          },
          "carry"_a, "seqs"_a, "weights"_a, "mask"_a, "T"_a, "reverse"_a, "keep_states"_a,
          "gradient"_a = false,
          "(final carry, boundary values [T, B, cols], carries before each step or [], "
          "accumulators, batch slices run in parallel): a backward program with "
          "gradient=True");
}

}  // namespace rnnfast
