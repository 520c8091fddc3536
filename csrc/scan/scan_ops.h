// The op rnnfast::scan_run (schema: ops.cpp): a registered scan program (program_registry.h)
// run by the scan engine. Its CPU kernel and Autograd registration are in scan_ops.cpp, its
// fake kernel in rnnfast/_ops.py.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

namespace rnnfast::scan {

using ScanRunResult = std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>,
                                 std::vector<at::Tensor>, std::vector<at::Tensor>>;

using ScanRunSignature = ScanRunResult(int64_t, at::TensorList, at::TensorList, at::TensorList,
                                       const std::optional<at::Tensor>&, c10::SymInt, bool, bool,
                                       bool);

inline const c10::TypedOperatorHandle<ScanRunSignature>& scan_run_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("rnnfast::scan_run", "")
                             .typed<ScanRunSignature>();
  return op;
}

// How many batch slices the CPU kernel's last run gave threads of their own (for the tests).
int64_t last_run_slices();

}  // namespace rnnfast::scan
