#include "scan_engine_bindings.h"

#include <ATen/ATen.h>
#include <torch/csrc/utils/pybind.h>

#include "../scan/differentiable_scan.h"
#include "../scan/prepared_scan.h"
#include "../scan/program_registry.h"
#include "../scan/scan_ops.h"
#include "gil_release.h"

namespace rnnfast {
namespace {

// What GilReleasedForLargeCalls weighs for a scan call: steps times the batch, and the
// weights' elements.
struct CallSize {
  int64_t rows = 0, weight_elements = 0;
};

CallSize call_size(int64_t steps, const std::vector<at::Tensor>& carry,
                   const std::vector<at::Tensor>& weights) {
  CallSize size;
  for (const at::Tensor& w : weights) size.weight_elements += w.numel();
  size.rows = carry.empty() || carry[0].dim() == 0 ? 0 : steps * carry[0].size(0);
  return size;
}

}  // namespace

void bind_scan_engine(pybind11::module_& m) {
  using namespace pybind11::literals;
  m.def("scan_register_program", &scan::register_program, "codes"_a, "scalars"_a,
        "registers a scan program (rnnfast/_scan/lower.py) for rnnfast::scan_run; returns its "
        "handle");
  m.def("scan_release_program", &scan::release_program, "handle"_a,
        "drops a registered scan program (nothing if it is not registered)");
  m.def(
      "scan_program_signature",
      [](int64_t handle) {
        const auto engine = scan::registered_engine(handle);
        const scan::Program& p = engine->program();
        const auto cols = [&p](const std::vector<int64_t>& ids) {
          std::vector<int64_t> out;
          for (int64_t id : ids) out.push_back(p.cols[id]);
          return out;
        };
        return std::make_tuple(p.dtype == 0 ? "float32" : "float64", cols(p.carry_in),
                               cols(p.seq_in), p.weights.size(), cols(p.boundary), p.accumulators);
      },
      "handle"_a,
      "(dtype, columns of each carry, of each sequence, the number of weights, columns of each "
      "boundary value, each accumulator's shape) of a registered scan program");
  // Through the dispatcher as torch.ops.rnnfast.scan_run, without the boxed argument parsing.
  m.def(
      "scan_run",
      [](int64_t program, const std::vector<at::Tensor>& carry, const std::vector<at::Tensor>& seqs,
         const std::vector<at::Tensor>& weights, const std::optional<at::Tensor>& mask,
         int64_t steps, bool reverse, bool keep_states, bool gradient,
         const std::optional<std::vector<int64_t>>& weight_views) {
        const CallSize size = call_size(steps, carry, weights);
        const GilReleasedForLargeCalls gil(size.rows, size.weight_elements);
        return scan::scan_run_op().call(program, carry, seqs,
                                        scan::program_weights(weight_views, weights), mask,
                                        c10::SymInt(steps), reverse, keep_states, gradient);
      },
      "program"_a, "carry"_a, "seqs"_a, "weights"_a, "mask"_a, "steps"_a, "reverse"_a,
      "keep_states"_a, "gradient"_a, "weight_views"_a = pybind11::none(),
      "rnnfast::scan_run: (final carry, boundary values [steps, B, cols], the carry before each "
      "step or none, the program's accumulators); weight_views as in scan_run_differentiable "
      "(the program's weights made of `weights`)");
  m.def(
      "scan_run_differentiable",
      [](int64_t program, int64_t backward_program, int64_t boundary,
         const std::vector<at::Tensor>& carry, const std::vector<at::Tensor>& seqs,
         const std::vector<at::Tensor>& weights,
         const std::optional<std::vector<int64_t>>& weight_views,
         const std::optional<std::vector<int64_t>>& backward_weight_sources,
         const std::vector<at::Tensor>& backward_weights, const std::optional<at::Tensor>& mask,
         int64_t steps, bool reverse) {
        const CallSize size = call_size(steps, carry, weights);
        const GilReleasedForLargeCalls gil(size.rows, size.weight_elements);
        return scan::run_differentiable({program, backward_program, boundary, weight_views,
                                         backward_weight_sources, mask, steps, reverse},
                                        carry, seqs, weights, backward_weights);
      },
      "program"_a, "backward_program"_a, "boundary"_a, "carry"_a, "seqs"_a, "weights"_a,
      "weight_views"_a, "backward_weight_sources"_a, "backward_weights"_a, "mask"_a, "steps"_a,
      "reverse"_a,
      "the final carry and the first `boundary` boundary values of the program's run, "
      "differentiable: the node's backward runs backward_program through rnnfast::scan_run");
  pybind11::class_<scan::PreparedScan>(m, "PreparedScan",
                                       "a lowered loop's usual call with all but its tensors "
                                       "fixed (csrc/scan/prepared_scan.h)")
      .def(pybind11::init<int64_t, int64_t, int64_t, int64_t, std::vector<int64_t>,
                          std::optional<std::vector<int64_t>>>(),
           "program"_a, "keeping_program"_a, "backward_program"_a, "boundary"_a, "weight_views"_a,
           "backward_weight_sources"_a)
      .def(
          "__call__",
          [](const scan::PreparedScan& self, const std::vector<at::Tensor>& carry,
             const std::vector<at::Tensor>& seqs, const std::vector<at::Tensor>& lifted,
             int64_t steps, bool reverse) -> pybind11::object {
            const CallSize size = call_size(steps, carry, lifted);
            std::optional<std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>>> out;
            {
              const GilReleasedForLargeCalls gil(size.rows, size.weight_elements);
              out = self.run(carry, seqs, lifted, steps, reverse);
            }
            if (!out.has_value()) return pybind11::none();
            return pybind11::make_tuple(std::move(out->first), std::move(out->second));
          },
          "carry"_a, "seqs"_a, "lifted"_a, "steps"_a, "reverse"_a,
          "(final carry, boundary values), differentiable where grad mode is on and an input "
          "requires grad; None where that needs a backward program it was not given");
}

}  // namespace rnnfast
