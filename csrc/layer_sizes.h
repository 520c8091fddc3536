// The sizes of a layer the checks find (checks.h), and the shapes they give.
#pragma once

#include <cstdint>
#include <vector>

#include "cell_registry.h"

namespace rnnfast {

// The sizes of one layer in one direction.
//   T steps, B batch, I input size, H hidden size, P output size (H, or the LSTM projection),
//   G gates.
struct LayerSizes {
  CellKind kind;
  int64_t T, B, I, H, P, G;
};

// [T, B, X] or [B, T, X]: the shape of a per-step tensor in the caller's layout.
inline std::vector<int64_t> sequence_shape(const LayerSizes& s, int64_t width, bool batch_first) {
  return batch_first ? std::vector<int64_t>{s.B, s.T, width}
                     : std::vector<int64_t>{s.T, s.B, width};
}

}  // namespace rnnfast
