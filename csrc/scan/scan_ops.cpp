#include "scan_ops.h"

#include <ATen/core/LegacyTypeDispatch.h>
#include <c10/core/GradMode.h>
#include <torch/library.h>

#include <atomic>

#include "program_registry.h"

namespace rnnfast::scan {
namespace {

std::atomic<int64_t> last_slices{1};

// program: a handle of register_program; carry [B, cols] per carry slot; seqs [steps, B, cols]
// per sequence slot; weights as the program reads them; mask bool [steps, B] or none.
// Returns (final carry [B, cols], boundary values [steps, B, cols], the carry before each
// step [steps, B, cols] if keep_states, the program's accumulators).
ScanRunResult scan_run_cpu(int64_t program, at::TensorList carry, at::TensorList seqs,
                           at::TensorList weights, const std::optional<at::Tensor>& mask,
                           int64_t steps, bool reverse, bool keep_states, bool gradient) {
  const std::shared_ptr<const ScanEngine> engine = registered_engine(program);
  ScanForward out =
      engine->forward(carry, seqs, weights, mask, steps, reverse, keep_states, gradient);
  last_slices.store(out.slices, std::memory_order_relaxed);
  return {std::move(out.final_carry), std::move(out.boundary), std::move(out.states),
          std::move(out.accumulators)};
}

// The op has no derivative of its own: rnnfast.scan's autograd.Function differentiates the
// loop, running the step's backward program through this same op. So a call that would have
// autograd record the op is refused rather than given gradients of zero.
ScanRunResult scan_run_autograd(int64_t program, at::TensorList carry, at::TensorList seqs,
                                at::TensorList weights, const std::optional<at::Tensor>& mask,
                                c10::SymInt steps, bool reverse, bool keep_states, bool gradient) {
  if (c10::GradMode::is_enabled()) {
    for (at::TensorList list : {carry, seqs, weights}) {
      for (const at::Tensor& t : list) {
        TORCH_CHECK(!t.requires_grad(),
                    "rnnfast::scan_run has no derivative (rnnfast.scan differentiates the loop "
                    "around it): call it under torch.no_grad() or on tensors that do not "
                    "require grad");
      }
    }
  }
  at::AutoDispatchBelowADInplaceOrView guard;
  return scan_run_op().call(program, carry, seqs, weights, mask, std::move(steps), reverse,
                            keep_states, gradient);
}

}  // namespace

int64_t last_run_slices() { return last_slices.load(std::memory_order_relaxed); }

}  // namespace rnnfast::scan

TORCH_LIBRARY_IMPL(rnnfast, CPU, m) { m.impl("scan_run", &rnnfast::scan::scan_run_cpu); }

TORCH_LIBRARY_IMPL(rnnfast, Autograd, m) { m.impl("scan_run", &rnnfast::scan::scan_run_autograd); }
