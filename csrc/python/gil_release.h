// The GIL around the direct entries' calls into C++.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>

namespace rnnfast {

// Calls of fewer multiply-adds keep the GIL: handing it over and taking it back costs a few
// percent of a small layer's forward, and other Python threads lose nothing by waiting that
// long (Python switches threads every 5 ms). Larger calls release it, so that other threads
// run meanwhile.
constexpr int64_t kReleaseGilMacs = int64_t{1} << 20;

// The GIL released for the guard's life where the call has at least kReleaseGilMacs
// multiply-adds: `rows` rows (steps times batch) through weights of `weight_elements` in all.
class GilReleasedForLargeCalls {
 public:
  GilReleasedForLargeCalls(int64_t rows, int64_t weight_elements) {
    if (rows * weight_elements >= kReleaseGilMacs) released_.emplace();
  }

 private:
  std::optional<pybind11::gil_scoped_release> released_;
};

}  // namespace rnnfast
