// Runs the nodes of a scan program for one step at batch B: products by weights as GEMMs into
// buffers allocated once per call, pointwise nodes as SIMD passes over rows, row reductions,
// and last-dimension slices as views (a column offset). The caller points the carry and
// sequence slots at this step's rows before each run_step().
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Allocator.h>

#include <memory>
#include <vector>

#include "../cpu/gemm_cpu.h"
#include "row_operand.h"
#include "scan_program.h"

namespace rnnfast::scan {

template <class T>
class StepRunner {
 public:
  // weights: the tensors of p.weights in order; steps: how many run_step() calls follow (it
  // decides whether a weight is packed for the GEMM).
  StepRunner(const Program& p, int64_t B, const std::vector<at::Tensor>& weights, int64_t steps);
  void set_rows(int64_t slot, T* data, int64_t ld) { views_[slot] = {data, ld}; }
  Rows<T> rows(int64_t slot) const { return views_[slot]; }
  // Where accumulator k (p.accumulators[k], contiguous) sums its gradient.
  void set_accumulator(size_t k, T* data) { accumulators_.at(k) = data; }
  void run_step();

 private:
  Operand<T> operand(int64_t id, int64_t N) const;
  const T* weight_data(int64_t id) const;
  void run_node(size_t k);
  void run_product(size_t k);
  void run_row_node(const Node& node);
  void accumulate(const Node& node);

  const Program& p_;
  const int64_t B_;
  std::vector<Rows<T>> views_;      // per slot: this step's rows (batch slots)
  std::vector<at::Tensor> weight_;  // per slot: the contiguous weight (weight slots)
  std::vector<T> immediates_;       // the program's scalars in T
  std::vector<T*> accumulators_;    // per accumulator
  std::vector<std::unique_ptr<cpu::PackedMatrix<T>>> products_;  // per node, for products
  c10::DataPtr arena_;  // the buffer that the written slots' rows point into
};

}  // namespace rnnfast::scan
