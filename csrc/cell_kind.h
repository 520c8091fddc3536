// The cell names the ops take, and the one switch that turns a name into a cell type.
// Adding a cell: its struct in cells.h, a line in kCellNames, a case in dispatch_cell.
#pragma once

#include <string>
#include <utility>

#include "cells.h"

namespace rnnfast {

enum class CellKind {
  RnnTanh,
  RnnRelu,
  RnnTanhResidual,
  RnnReluResidual,
  Gru,
  GruResetBefore,
  Lstm,
};

// Parses the `cell` argument of the ops; throws a ValueError naming the accepted names.
CellKind parse_cell(const std::string& name);

template <class F>
decltype(auto) dispatch_cell(CellKind kind, F&& f) {
  switch (kind) {
    case CellKind::RnnTanh:
      return f(SrnCell<Act::Tanh, false>{});
    case CellKind::RnnRelu:
      return f(SrnCell<Act::Relu, false>{});
    case CellKind::RnnTanhResidual:
      return f(SrnCell<Act::Tanh, true>{});
    case CellKind::RnnReluResidual:
      return f(SrnCell<Act::Relu, true>{});
    case CellKind::Gru:
      return f(GruCell<true>{});
    case CellKind::GruResetBefore:
      return f(GruCell<false>{});
    case CellKind::Lstm:
    default:
      return f(LstmCell{});
  }
}

struct CellInfo {
  int gates;
  int saved;
  bool has_cell_state;
};

inline CellInfo cell_info(CellKind kind) {
  return dispatch_cell(kind, [](auto cell) {
    using Cell = decltype(cell);
    return CellInfo{Cell::kGates, Cell::kSaved, Cell::kHasCellState};
  });
}

}  // namespace rnnfast
