#include "scan_engine.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "row_kernels.h"
#include "step_runner.h"

namespace rnnfast::scan {
namespace {

void check_input(const at::Tensor& t, const char* what, size_t k, at::IntArrayRef shape,
                 at::ScalarType dtype) {
  TORCH_CHECK_VALUE(t.device().is_cpu() && t.scalar_type() == dtype && t.sizes() == shape,
                    "scan engine: ", what, " ", k, " must be a CPU ", dtype, " tensor of shape ",
                    shape, "; got ", t.scalar_type(), " ", t.sizes(), " on ", t.device());
}

template <class scalar_t>
Rows<const scalar_t> rows_of(const Rows<scalar_t>& r) {
  return {r.data, r.ld};
}

// The next carry, row by row: the step's value, or where the mask is off the current one
// (a gradient: the step's value plus the current one).
template <class scalar_t>
void advance_carry(int64_t B, int64_t N, Rows<scalar_t> step_value, const scalar_t* current,
                   scalar_t* next, const bool* mask_t, bool gradient) {
  for (int64_t b = 0; b < B; ++b) {
    const scalar_t* value = step_value.data + b * step_value.ld;
    const scalar_t* kept = current + b * N;
    scalar_t* out = next + b * N;
    if (mask_t == nullptr || mask_t[b]) {
      std::copy(value, value + N, out);
    } else if (gradient) {
      for (int64_t j = 0; j < N; ++j) out[j] = value[j] + kept[j];
    } else {
      std::copy(kept, kept + N, out);
    }
  }
}

// The carry's rows where the mask is on, zeros elsewhere (a gradient's input to a step).
template <class scalar_t>
void masked_rows(int64_t B, int64_t N, const scalar_t* carry, scalar_t* out, const bool* mask_t) {
  for (int64_t b = 0; b < B; ++b) {
    if (mask_t[b]) {
      std::copy(carry + b * N, carry + (b + 1) * N, out + b * N);
    } else {
      std::fill(out + b * N, out + (b + 1) * N, scalar_t(0));
    }
  }
}

template <class scalar_t>
scalar_t* data(const at::Tensor& t) {
  return t.data_ptr<scalar_t>();
}

// Points the carry and sequence slots at step t's rows; keeps the carry before the step.
// A gradient's carry is masked into `masked` where there is a mask.
template <class scalar_t>
void enter_step(const Program& p, StepRunner<scalar_t>& runner, ScanForward& out,
                const std::vector<at::Tensor>& seq, const std::vector<at::Tensor>& masked,
                const bool* mask_t, int64_t B, int64_t t) {
  for (size_t c = 0; c < p.carry_in.size(); ++c) {
    const int64_t N = p.cols[p.carry_in[c]];
    scalar_t* carry = data<scalar_t>(out.final_carry[c]);
    if (!masked.empty() && mask_t != nullptr) {
      masked_rows<scalar_t>(B, N, carry, data<scalar_t>(masked[c]), mask_t);
      carry = data<scalar_t>(masked[c]);
    }
    runner.set_rows(p.carry_in[c], carry, N);
    if (!out.states.empty()) {
      const scalar_t* from = data<scalar_t>(out.final_carry[c]);
      std::copy(from, from + B * N, data<scalar_t>(out.states[c]) + t * B * N);
    }
  }
  for (size_t j = 0; j < seq.size(); ++j) {
    const int64_t N = p.cols[p.seq_in[j]];
    runner.set_rows(p.seq_in[j], data<scalar_t>(seq[j]) + t * B * N, N);
  }
}

// Keeps step t's boundary values and moves each carry on (next becomes the current carry).
template <class scalar_t>
void leave_step(const Program& p, const StepRunner<scalar_t>& runner, ScanForward& out,
                std::vector<at::Tensor>& next, const bool* mask_t, bool gradient, int64_t B,
                int64_t t) {
  for (size_t j = 0; j < p.boundary.size(); ++j) {
    const int64_t N = p.cols[p.boundary[j]];
    copy_rows<scalar_t>(B, N, rows_of(runner.rows(p.boundary[j])),
                        Rows<scalar_t>{data<scalar_t>(out.boundary[j]) + t * B * N, N});
  }
  for (size_t c = 0; c < p.carry_in.size(); ++c) {
    advance_carry<scalar_t>(B, p.cols[p.carry_in[c]], runner.rows(p.carry_out[c]),
                            data<scalar_t>(out.final_carry[c]), data<scalar_t>(next[c]), mask_t,
                            gradient);
  }
  std::swap(out.final_carry, next);
}

template <class scalar_t>
ScanForward run_forward(const Program& p, const std::vector<at::Tensor>& carry,
                        const std::vector<at::Tensor>& seqs, const std::vector<at::Tensor>& weights,
                        const std::optional<at::Tensor>& mask, int64_t T, bool reverse,
                        bool keep_states, bool gradient) {
  const int64_t B = carry.at(0).size(0);
  ScanForward out;
  std::vector<at::Tensor> next, seq, masked;
  for (const at::Tensor& s : seqs) seq.push_back(s.contiguous());
  for (const at::Tensor& c : carry) {
    out.final_carry.push_back(c.clone(at::MemoryFormat::Contiguous));
    next.push_back(at::empty_like(out.final_carry.back()));
    if (gradient && mask.has_value()) masked.push_back(at::empty_like(next.back()));
    if (keep_states) out.states.push_back(c.new_empty({T, B, c.size(1)}));
  }
  for (int64_t id : p.boundary) {
    out.boundary.push_back(carry[0].new_empty({T, B, p.cols[id]}));
  }
  const at::Tensor mask_rows = mask.has_value() ? mask->contiguous() : at::Tensor();
  StepRunner<scalar_t> runner(p, B, weights, T);
  for (size_t k = 0; k < p.accumulators.size(); ++k) {
    out.accumulators.push_back(carry[0].new_zeros(p.accumulators[k]));
    runner.set_accumulator(k, data<scalar_t>(out.accumulators.back()));
  }
  for (int64_t k = 0; k < T; ++k) {
    const int64_t t = reverse ? T - 1 - k : k;
    const bool* mask_t = mask_rows.defined() ? mask_rows.const_data_ptr<bool>() + t * B : nullptr;
    enter_step<scalar_t>(p, runner, out, seq, masked, mask_t, B, t);
    runner.run_step();
    leave_step<scalar_t>(p, runner, out, next, mask_t, gradient, B, t);
  }
  return out;
}

}  // namespace

ScanForward ScanEngine::forward(const std::vector<at::Tensor>& carry,
                                const std::vector<at::Tensor>& seqs,
                                const std::vector<at::Tensor>& weights,
                                const std::optional<at::Tensor>& mask, int64_t T, bool reverse,
                                bool keep_states, bool gradient) const {
  const Program& p = program_;
  TORCH_CHECK_VALUE(carry.size() == p.carry_in.size() && seqs.size() == p.seq_in.size() &&
                        weights.size() == p.weights.size(),
                    "scan engine: expected ", p.carry_in.size(), " carries, ", p.seq_in.size(),
                    " sequences and ", p.weights.size(), " weights; got ", carry.size(), ", ",
                    seqs.size(), " and ", weights.size());
  TORCH_CHECK_VALUE(!carry.empty() && carry[0].dim() == 2 && carry[0].size(0) > 0 && T > 0,
                    "scan engine: carry 0 must be [B > 0, cols] and T > 0");
  const int64_t B = carry[0].size(0);
  for (size_t k = 0; k < carry.size(); ++k) {
    check_input(carry[k], "carry", k, {B, p.cols[p.carry_in[k]]}, dtype());
  }
  for (size_t k = 0; k < seqs.size(); ++k) {
    check_input(seqs[k], "sequence", k, {T, B, p.cols[p.seq_in[k]]}, dtype());
  }
  for (size_t k = 0; k < weights.size(); ++k) {
    check_input(weights[k], "weight", k, weights[k].sizes(), dtype());
  }
  if (mask.has_value()) check_input(*mask, "mask", 0, {T, B}, at::kBool);
  if (p.dtype == 0) {
    return run_forward<float>(p, carry, seqs, weights, mask, T, reverse, keep_states, gradient);
  }
  return run_forward<double>(p, carry, seqs, weights, mask, T, reverse, keep_states, gradient);
}

}  // namespace rnnfast::scan
