// The cell registry: every cell the ops take, defined once. An entry is the name the ops take
// and the cell's type in cells.h; a CellKind is an entry's index, and the traits the engines'
// run-time code reads (CellSpec) come from the type's constants. The engines, the autograd
// code and Python (rnnfast._C.cells(), read by rnnfast._ops) all read this table.
// Adding a cell: its struct in cells.h, its entry in kCellRegistry, and its tests.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <tuple>
#include <utility>

#include "cells.h"

namespace rnnfast {

template <class CellType>
struct CellEntry {
  using Cell = CellType;
  const char* name;  // as the ops' `cell` argument
};

inline constexpr std::tuple kCellRegistry{
    CellEntry<SrnCell<Act::Tanh, false>>{"rnn_tanh"},
    CellEntry<SrnCell<Act::Relu, false>>{"rnn_relu"},
    CellEntry<SrnCell<Act::Tanh, true>>{"rnn_tanh_residual"},
    CellEntry<SrnCell<Act::Relu, true>>{"rnn_relu_residual"},
    CellEntry<GruCell<true>>{"gru"},
    CellEntry<GruCell<false>>{"gru_reset_before"},
    CellEntry<LstmCell>{"lstm"},
};

using CellRegistry = std::remove_const_t<decltype(kCellRegistry)>;
inline constexpr std::size_t kCellCount = std::tuple_size_v<CellRegistry>;

// A cell: its entry's index in kCellRegistry (parse_cell gives it from a name).
enum class CellKind : unsigned char {};

// What code that is not templated on the cell reads of it, from its cells.h constants.
struct CellSpec {
  const char* name;
  int gates;                // G: gate pre-activations per hidden unit
  int saved;                // values per hidden unit and step the forward keeps for backward
  int recurrent_bias_from;  // the first gate whose b_hh stays on the recurrent side
  bool reset_before;        // the reset-before GRU: W_hn multiplies r * h
  bool has_cell_state;      // the LSTM's c
};

template <class Cell>
constexpr CellSpec spec_of(CellEntry<Cell> entry) {
  return CellSpec{entry.name,         Cell::kGates,       Cell::kSaved, Cell::kRecurrentBiasFrom,
                  Cell::kResetBefore, Cell::kHasCellState};
}

inline constexpr std::array<CellSpec, kCellCount> kCellSpecs =
    std::apply([](auto... entry) { return std::array<CellSpec, kCellCount>{spec_of(entry)...}; },
               kCellRegistry);

inline const CellSpec& cell_spec(CellKind kind) {
  return kCellSpecs[static_cast<std::size_t>(kind)];
}

// Parses the `cell` argument of the ops; throws a ValueError naming the accepted names.
CellKind parse_cell(const std::string& name);

// f(Cell{}) for the cells.h type of `kind`: the one place a run-time kind becomes a type.
template <std::size_t I = 0, class F>
decltype(auto) dispatch_cell(CellKind kind, F&& f) {
  using Cell = typename std::tuple_element_t<I, CellRegistry>::Cell;
  if constexpr (I + 1 < kCellCount) {
    if (static_cast<std::size_t>(kind) != I) {
      return dispatch_cell<I + 1>(kind, std::forward<F>(f));
    }
  }
  return f(Cell{});
}

}  // namespace rnnfast
