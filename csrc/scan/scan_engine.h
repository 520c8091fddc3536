// The loop part of an rnnfast.scan step run over all steps in C++: a decoded scan program
// (scan_program.h) and its forward over a sequence, with the conventions of the Python
// runner (rnnfast/_scan/recurrence.py): rows whose mask[t] is false keep their carry; reverse
// runs from the last step; the carry before each step is kept on request (for the backward).
// A backward program runs the same way with `gradient` set: its carries are the carries'
// gradients, which pass masked rows on unchanged and add to them (what the Python backward
// does), and its accumulators sum the weights' gradients over the steps. Large calls split the
// batch into slices that threads run through all steps on their own (cpu/batch_slices.h).
#pragma once

#include <ATen/core/ATen_fwd.h>
#include <ATen/core/Tensor.h>

#include <optional>
#include <vector>

#include "scan_program.h"

namespace rnnfast::scan {

struct ScanForward {
  std::vector<at::Tensor> final_carry;   // [B, cols] each
  std::vector<at::Tensor> boundary;      // [T, B, cols]: the boundary values of each step
  std::vector<at::Tensor> states;        // [T, B, cols]: the carry before each step (or none)
  std::vector<at::Tensor> accumulators;  // per accumulator of the program, summed over steps
  int64_t slices = 1;                    // how many batch slices ran on their own threads
};

class ScanEngine {
 public:
  ScanEngine(const std::vector<int64_t>& codes, std::vector<double> scalars)
      : program_(decode_program(codes, std::move(scalars))) {}
  // The dtype every value of the program has (float32 or float64).
  at::ScalarType dtype() const { return program_.dtype == 0 ? at::kFloat : at::kDouble; }
  const Program& program() const { return program_; }
  // carry: [B, cols] per carry_in; seqs: [T, B, cols] per seq_in; weights per weights slot;
  // mask: bool [T, B] or none. All CPU tensors of dtype().
  ScanForward forward(at::TensorList carry, at::TensorList seqs, at::TensorList weights,
                      const std::optional<at::Tensor>& mask, int64_t T, bool reverse,
                      bool keep_states, bool gradient = false) const;

 private:
  Program program_;
};

}  // namespace rnnfast::scan
