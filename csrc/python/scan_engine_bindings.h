// rnnfast._C.ScanEngine: the C++ runner of rnnfast.scan's loop part (csrc/scan/).
#pragma once

#include <torch/extension.h>

namespace rnnfast {

void bind_scan_engine(pybind11::module_& m);

}  // namespace rnnfast
