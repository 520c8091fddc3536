#include "scan_engine_bindings.h"

#include <torch/csrc/autograd/python_variable.h>

#include <string>

#include "../scan/differentiable_scan.h"
#include "../scan/program_registry.h"
#include "../scan/scan_ops.h"
#include "gil_release.h"

namespace rnnfast {
namespace {

// Appends what rnnfast.scan's trace depends on in each tensor of `tensors` (a list): dtype,
// device, requires_grad and the sizes after the first `skip`. False where one is not a plain
// dense tensor with concrete sizes (the caller then describes them in Python).
bool describe_tensors(pybind11::handle tensors, int64_t skip, std::string& key) {
  PyObject* list = tensors.ptr();
  if (!PyList_Check(list)) return false;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); ++i) {
    PyObject* obj = PyList_GET_ITEM(list, i);
    if (!THPVariable_Check(obj)) return false;
    const at::Tensor& t = THPVariable_Unpack(obj);
    if (t.layout() != at::kStrided || t.is_nested() ||
        t.unsafeGetTensorImpl()->is_python_dispatch() ||
        t.unsafeGetTensorImpl()->has_symbolic_sizes_strides()) {
      return false;
    }
    const int64_t fields[] = {static_cast<int64_t>(t.scalar_type()),
                              static_cast<int64_t>(t.device().type()), t.device().index(),
                              t.requires_grad(), t.dim() - skip};
    key.append(reinterpret_cast<const char*>(fields), sizeof(fields));
    for (int64_t d = skip; d < t.dim(); ++d) {
      const int64_t size = t.size(d);
      key.append(reinterpret_cast<const char*>(&size), sizeof(size));
    }
  }
  return true;
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
  m.def(
      "scan_tensors_key",
      [](pybind11::handle lifted, pybind11::handle init, pybind11::handle xs) -> pybind11::object {
        std::string key;
        if (!describe_tensors(lifted, 0, key) || !describe_tensors(init, 1, key) ||
            !describe_tensors(xs, 2, key)) {
          return pybind11::none();
        }
        return pybind11::bytes(key);
      },
      "lifted"_a, "init"_a, "xs"_a,
      "what rnnfast.scan's trace depends on in its tensors (lists; init's batch and xs' steps "
      "and batch left out), as bytes for its cache key; None where one is not a plain dense "
      "tensor with concrete sizes");
  // Through the dispatcher as torch.ops.rnnfast.scan_run, without the boxed argument parsing.
  m.def(
      "scan_run",
      [](int64_t program, const std::vector<at::Tensor>& carry, const std::vector<at::Tensor>& seqs,
         const std::vector<at::Tensor>& weights, const std::optional<at::Tensor>& mask,
         int64_t steps, bool reverse, bool keep_states, bool gradient,
         const std::optional<std::vector<int64_t>>& weight_views) {
        int64_t weight_elements = 0;
        for (const at::Tensor& w : weights) weight_elements += w.numel();
        const int64_t batch = carry.empty() || carry[0].dim() == 0 ? 0 : carry[0].size(0);
        const GilReleasedForLargeCalls gil(steps * batch, weight_elements);
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
        int64_t weight_elements = 0;
        for (const at::Tensor& w : weights) weight_elements += w.numel();
        const int64_t batch = carry.empty() || carry[0].dim() == 0 ? 0 : carry[0].size(0);
        const GilReleasedForLargeCalls gil(steps * batch, weight_elements);
        return scan::run_differentiable({program, backward_program, boundary, weight_views,
                                         backward_weight_sources, mask, steps, reverse},
                                        carry, seqs, weights, backward_weights);
      },
      "program"_a, "backward_program"_a, "boundary"_a, "carry"_a, "seqs"_a, "weights"_a,
      "weight_views"_a, "backward_weight_sources"_a, "backward_weights"_a, "mask"_a, "steps"_a,
      "reverse"_a,
      "the final carry and the first `boundary` boundary values of the program's run, "
      "differentiable: the node's backward runs backward_program through rnnfast::scan_run");
}

}  // namespace rnnfast
