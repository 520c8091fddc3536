#include "scan_engine.h"

#include <ATen/ATen.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include "../cpu/batch_slices.h"
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

// n elements rounded up to whole 64-byte cache lines.
template <class scalar_t>
int64_t round_up_to_line(int64_t n) {
  constexpr int64_t line = 64 / sizeof(scalar_t);
  return (n + line - 1) / line * line;
}

template <class scalar_t>
scalar_t* data(const at::Tensor& t) {
  return t.data_ptr<scalar_t>();
}

// The call's tensors as the slices see them: [T, B, cols] per step, [B, cols] for the carries.
template <class scalar_t>
struct CallRows {
  const Program& p;
  int64_t B, T;
  bool reverse, gradient;
  std::vector<scalar_t*> seq, boundary, states, final_carry;
  std::vector<const scalar_t*> initial_carry;
  const bool* mask = nullptr;  // [T, B] or null
};

// Runs rows [b0, b1) of the batch through all T steps (a row depends on no other row): its
// own step runner, carries and accumulators (summed over its rows and steps).
template <class scalar_t>
void run_rows(const CallRows<scalar_t>& io, const std::vector<at::Tensor>& weights, int64_t b0,
              int64_t b1, const std::vector<scalar_t*>& accumulators) {
  const Program& p = io.p;
  const int64_t rows = b1 - b0, B = io.B;
  const size_t n_carry = p.carry_in.size();
  // This slice's carries, now and next, and a gradient's masked copy, in one block from the
  // CPU allocator (aligned as tensors are: the carries are the recurrent products' left
  // operands), each carry's buffers padded to whole cache lines.
  const bool masking = io.gradient && io.mask != nullptr;
  std::vector<int64_t> offset(n_carry);
  int64_t total = 0;
  for (size_t c = 0; c < n_carry; ++c) {
    offset[c] = total;
    total += (masking ? 3 : 2) * round_up_to_line<scalar_t>(rows * p.cols[p.carry_in[c]]);
  }
  const c10::DataPtr block = c10::GetCPUAllocator()->allocate(total * sizeof(scalar_t));
  scalar_t* base = static_cast<scalar_t*>(block.get());
  // Where the states are kept, the carry before step k is this slice's rows of them, written
  // there by step k - 1 (no copy); the last step writes into the block.
  const bool keeping = !io.states.empty();
  const auto kept_rows = [&](size_t c, int64_t k) {
    const int64_t t = io.reverse ? io.T - 1 - k : k;
    return io.states[c] + (t * B + b0) * p.cols[p.carry_in[c]];
  };
  std::vector<scalar_t*> carry(n_carry), next(n_carry), masked(n_carry, nullptr);
  for (size_t c = 0; c < n_carry; ++c) {
    const int64_t N = p.cols[p.carry_in[c]], size = round_up_to_line<scalar_t>(rows * N);
    carry[c] = keeping ? kept_rows(c, 0) : base + offset[c];
    next[c] = base + offset[c] + size;
    if (masking) masked[c] = next[c] + size;
    const scalar_t* first = io.initial_carry[c] + b0 * N;
    std::copy(first, first + rows * N, carry[c]);
  }
  StepRunner<scalar_t> runner(p, rows, weights, io.T);
  for (size_t k = 0; k < accumulators.size(); ++k) runner.set_accumulator(k, accumulators[k]);
  for (int64_t k = 0; k < io.T; ++k) {
    const int64_t t = io.reverse ? io.T - 1 - k : k;
    const bool* mask_t = io.mask != nullptr ? io.mask + t * B + b0 : nullptr;
    for (size_t c = 0; c < n_carry; ++c) {
      const int64_t N = p.cols[p.carry_in[c]];
      scalar_t* current = carry[c];
      if (masked[c] != nullptr && mask_t != nullptr) {  // a gradient's carry, masked
        masked_rows<scalar_t>(rows, N, current, masked[c], mask_t);
        current = masked[c];
      }
      runner.set_rows(p.carry_in[c], current, N);
    }
    for (size_t j = 0; j < io.seq.size(); ++j) {
      const int64_t N = p.cols[p.seq_in[j]];
      runner.set_rows(p.seq_in[j], io.seq[j] + (t * B + b0) * N, N);
    }
    for (size_t j = 0; j < p.boundary.size(); ++j) {
      if (!p.boundary_in_place[j]) continue;
      const int64_t N = p.cols[p.boundary[j]];
      runner.set_rows(p.boundary[j], io.boundary[j] + (t * B + b0) * N, N);
    }
    runner.run_step();
    for (size_t j = 0; j < p.boundary.size(); ++j) {
      if (p.boundary_in_place[j]) continue;
      const int64_t N = p.cols[p.boundary[j]];
      copy_rows<scalar_t>(rows, N, rows_of(runner.rows(p.boundary[j])),
                          Rows<scalar_t>{io.boundary[j] + (t * B + b0) * N, N});
    }
    for (size_t c = 0; c < n_carry; ++c) {
      const bool into_kept = keeping && k + 1 < io.T;
      scalar_t* out = into_kept ? kept_rows(c, k + 1) : next[c];
      advance_carry<scalar_t>(rows, p.cols[p.carry_in[c]], runner.rows(p.carry_out[c]), carry[c],
                              out, mask_t, io.gradient);
      if (into_kept) {
        carry[c] = out;
      } else {
        std::swap(carry[c], next[c]);
      }
    }
  }
  for (size_t c = 0; c < n_carry; ++c) {
    const int64_t N = p.cols[p.carry_in[c]];
    std::copy(carry[c], carry[c] + rows * N, io.final_carry[c] + b0 * N);
  }
}

// The batch split into slices that threads run independently, as the fused engine's
// (cpu/batch_slices.h), by the multiply-adds of the program's weights at every step. Unlike
// the fused engine, which runs a layer whose weights outgrow the L2 cache with its units split
// across threads (cpu/unit_slices.h), the scan engine has only its per-step threaded GEMM to
// fall back on, and that costs more than reading the weights from L3 in every slice
// (docs/performance.md): the weights' size does not keep a batch whole here. A scan step costs
// more than its products (its pointwise passes run the program's nodes one by one), so a split
// pays from far fewer multiply-adds than the fused engine's (docs/performance.md).
constexpr int64_t kScanMinSplitMacs = 1 << 17;

cpu::BatchSlices slices_of(const std::vector<at::Tensor>& weights, int64_t B, int64_t T) {
  int64_t elements = 0;
  for (const at::Tensor& w : weights) elements += w.numel();
  return cpu::batch_slices(B, T, {elements, /*bytes=*/0}, kScanMinSplitMacs);
}

template <class scalar_t>
ScanForward run_forward(const Program& p, at::TensorList carry, at::TensorList seqs,
                        at::TensorList weights, const std::optional<at::Tensor>& mask, int64_t T,
                        bool reverse, bool keep_states, bool gradient) {
  const int64_t B = carry.at(0).size(0);
  ScanForward out;
  std::vector<at::Tensor> seq, contiguous_weights, initial_carry;
  for (const at::Tensor& s : seqs) seq.push_back(s.contiguous());
  for (const at::Tensor& w : weights) contiguous_weights.push_back(w.contiguous());
  const at::Tensor mask_rows = mask.has_value() ? mask->contiguous() : at::Tensor();
  CallRows<scalar_t> io{p, B, T, reverse, gradient};
  io.mask = mask_rows.defined() ? mask_rows.const_data_ptr<bool>() : nullptr;
  for (const at::Tensor& s : seq) io.seq.push_back(data<scalar_t>(s));
  for (const at::Tensor& c : carry) {
    initial_carry.push_back(c.contiguous());
    io.initial_carry.push_back(initial_carry.back().const_data_ptr<scalar_t>());
    out.final_carry.push_back(at::empty({B, c.size(1)}, c.options()));
    io.final_carry.push_back(data<scalar_t>(out.final_carry.back()));
    if (keep_states) {
      out.states.push_back(at::empty({T, B, c.size(1)}, c.options()));
      io.states.push_back(data<scalar_t>(out.states.back()));
    }
  }
  for (int64_t id : p.boundary) {
    out.boundary.push_back(at::empty({T, B, p.cols[id]}, carry[0].options()));
    io.boundary.push_back(data<scalar_t>(out.boundary.back()));
  }
  const cpu::BatchSlices slices =
      weights.empty() ? cpu::BatchSlices{1, B} : slices_of(contiguous_weights, B, T);
  // Slice 0 sums into the results; the others into their own, added after.
  std::vector<std::vector<at::Tensor>> sums(slices.count);
  for (int64_t i = 0; i < slices.count; ++i) {
    for (const std::vector<int64_t>& shape : p.accumulators) {
      at::Tensor sum = at::empty(shape, carry[0].options());
      std::fill_n(data<scalar_t>(sum), sum.numel(), scalar_t(0));
      sums[i].push_back(std::move(sum));
    }
  }
  cpu::for_each_slice(slices, [&](int64_t i) {
    std::vector<scalar_t*> accumulators;
    for (const at::Tensor& a : sums[i]) accumulators.push_back(data<scalar_t>(a));
    run_rows<scalar_t>(io, contiguous_weights, slices.begin(i), slices.end(i, B), accumulators);
  });
  for (int64_t i = 1; i < slices.count; ++i) {
    for (size_t k = 0; k < sums[0].size(); ++k) sums[0][k].add_(sums[i][k]);
  }
  out.accumulators = std::move(sums[0]);
  out.slices = slices.count;
  return out;
}

}  // namespace

ScanForward ScanEngine::forward(at::TensorList carry, at::TensorList seqs, at::TensorList weights,
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
