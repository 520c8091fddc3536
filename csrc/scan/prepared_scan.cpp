#include "prepared_scan.h"

#include <ATen/core/grad_mode.h>
#include <c10/core/SymInt.h>

#include "scan_ops.h"

namespace rnnfast::scan {
namespace {

bool any_requires_grad(std::initializer_list<at::TensorList> groups) {
  for (at::TensorList group : groups) {
    for (const at::Tensor& t : group) {
      if (t.requires_grad()) return true;
    }
  }
  return false;
}

}  // namespace

PreparedScan::PreparedScan(int64_t program, int64_t keeping_program, int64_t backward_program,
                           int64_t boundary, std::vector<int64_t> weight_views,
                           std::optional<std::vector<int64_t>> backward_weight_sources)
    : program_(program),
      differentiable_{keeping_program,
                      backward_program,
                      boundary,
                      std::move(weight_views),
                      std::move(backward_weight_sources),
                      std::nullopt,
                      0,
                      false} {}

std::optional<std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>>> PreparedScan::run(
    at::TensorList carry, at::TensorList seqs, at::TensorList lifted, int64_t steps,
    bool reverse) const {
  if (at::GradMode::is_enabled() && any_requires_grad({carry, seqs, lifted})) {
    if (differentiable_.backward_program < 0) return std::nullopt;
    DifferentiableScan call = differentiable_;
    call.steps = steps;
    call.reverse = reverse;
    std::vector<at::Tensor> outs = run_differentiable(call, carry, seqs, lifted, {});
    std::vector<at::Tensor> boundary(outs.begin() + static_cast<int64_t>(carry.size()), outs.end());
    outs.resize(carry.size());
    return std::make_pair(std::move(outs), std::move(boundary));
  }
  auto [final_carry, boundary, states, accumulators] = scan_run_op().call(
      program_, carry, seqs, program_weights(differentiable_.weight_views, lifted), std::nullopt,
      c10::SymInt(steps), reverse, /*keep_states=*/false, /*gradient=*/false);
  return std::make_pair(std::move(final_carry), std::move(boundary));
}

}  // namespace rnnfast::scan
