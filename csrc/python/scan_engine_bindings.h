// rnnfast._C's entries for rnnfast.scan's loop engine (csrc/scan/): registering a program, its
// signature, and a direct call of the op rnnfast::scan_run.
#pragma once

#include <pybind11/pybind11.h>

namespace rnnfast {

void bind_scan_engine(pybind11::module_& m);

}  // namespace rnnfast
