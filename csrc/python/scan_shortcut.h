// rnnfast._C's entries for rnnfast.scan's front end (rnnfast/_scan/cache.py, shortcut.py): the
// tensors' part of the cache key, and the usual call's match against a shortcut, each without
// Python per tensor.
#pragma once

#include <pybind11/pybind11.h>

namespace rnnfast {

void bind_scan_shortcut(pybind11::module_& m);

}  // namespace rnnfast
