// rnnfast._C._testing: hooks for the tests into the engines' policies and pieces, which the
// library itself never calls.
#pragma once

#include <pybind11/pybind11.h>

namespace rnnfast {

// Adds the submodule _testing to the module `parent` (rnnfast._C).
void define_testing_module(pybind11::module_& parent);

}  // namespace rnnfast
