#include "step_runner.h"

#include <ATen/ATen.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>
#include <c10/util/SmallVector.h>

#include "../cpu/vec_math.h"
#include "pointwise_ops.h"
#include "row_kernels.h"

namespace rnnfast::scan {
namespace {

// Weight-gradient products up to this many multiply-adds run as rank-one updates.
constexpr int64_t kSmallAccumulateMacs = int64_t{1} << 16;

bool is_product(Op op) { return op == Op::kMm || op == Op::kAddmm || op == Op::kMmAccumulate; }
bool is_pointwise(Op op) {
  return (op >= Op::kAdd && op < Op::kSplit) || (op >= Op::kErf && op < Op::kRowSum) ||
         (op >= Op::kExp2 && op <= Op::kDivFloor);
}

// acc[r, :] += sum over b of a[b * lda + r] * g[b, :] for r < R: R rows of acc row-major with
// N columns; g [B, N] with its stride. R independent chains per column block.
template <int R, class T>
void accumulate_rows(int64_t B, int64_t N, const T* a, int64_t lda, Rows<T> g, T* acc) {
  using V = at::vec::Vectorized<T>;
  for (int64_t j = 0; j < N; j += V::size()) {
    const int64_t n = std::min<int64_t>(V::size(), N - j);
    V sum[R];
    for (int r = 0; r < R; ++r) sum[r] = cpu::load(acc + r * N + j, n);
    for (int64_t b = 0; b < B; ++b) {
      const V g_v = cpu::load(g.data + b * g.ld + j, n);
      const T* a_row = a + b * lda;
      for (int r = 0; r < R; ++r) sum[r] = at::vec::fmadd(V(a_row[r]), g_v, sum[r]);
    }
    for (int r = 0; r < R; ++r) cpu::store(acc + r * N + j, sum[r], n);
  }
}

}  // namespace

template <class T>
StepRunner<T>::StepRunner(const Program& p, int64_t B, const std::vector<at::Tensor>& weights,
                          int64_t steps)
    : p_(p),
      B_(B),
      views_(p.cols.size()),
      weight_(p.cols.size()),
      immediates_(p.scalars.begin(), p.scalars.end()),
      accumulators_(p.accumulators.size()),
      products_(p.nodes.size()) {
  for (size_t k = 0; k < p.weights.size(); ++k) {
    weight_[p.weights[k]] = weights[k].contiguous();
  }
  // One buffer for every value a node writes (views of slices excepted).
  int64_t total = 0;
  std::vector<int64_t> offset(p.cols.size(), -1);
  for (const Node& node : p.nodes) {
    if (node.op == Op::kSplit) continue;
    for (int64_t o : node.outs) {
      offset[o] = total;
      total += B * std::max<int64_t>(p.cols[o], 0);
    }
  }
  arena_ = c10::GetCPUAllocator()->allocate(std::max<int64_t>(total, 1) * sizeof(T));
  T* arena = static_cast<T*>(arena_.get());
  for (size_t s = 0; s < offset.size(); ++s) {
    if (offset[s] >= 0) views_[s] = {arena + offset[s], p.cols[s]};
  }
  for (size_t k = 0; k < p.nodes.size(); ++k) {
    const Node& node = p.nodes[k];
    if (!is_product(node.op)) continue;
    const int64_t a = node.ins.at(node.ins.size() - 2), w_slot = node.ins.back();
    TORCH_CHECK(a >= 0 && p.cols[a] >= 0 && w_slot >= 0 && p.cols[w_slot] < 0,
                "scan engine: a product must multiply a batch value by a weight");
    // Row-major (weight_ holds them contiguous), so that small products take the small-GEMM
    // path rather than copying a transposed weight into panels at every step.
    const at::Tensor& w = weight_[w_slot];
    TORCH_CHECK(w.dim() == 2 && w.size(0) == p.cols[a],
                "scan engine: a product's weight must "
                "be [",
                p.cols[a], ", N]; got ", w.sizes());
    const cpu::MatrixRef<T> ref{w.const_data_ptr<T>(), std::max<int64_t>(w.size(1), 1), false};
    products_[k] = std::make_unique<cpu::PackedMatrix<T>>(B, w.size(1), w.size(0), ref, steps);
  }
}

template <class T>
Operand<T> StepRunner<T>::operand(int64_t id, int64_t N) const {
  if (id < 0) return {&immediates_[-id - 1], 0, false};
  if (p_.cols[id] < 0) {
    const at::Tensor& w = weight_[id];
    TORCH_CHECK(w.numel() == N || w.numel() == 1, "scan engine: a weight of ", w.numel(),
                " elements in a pointwise op over ", N, " columns");
    return {w.const_data_ptr<T>(), 0, w.numel() == N && N > 1};
  }
  TORCH_CHECK(p_.cols[id] == N || p_.cols[id] == 1, "scan engine: a value of ", p_.cols[id],
              " columns in a pointwise op over ", N, " columns");
  return {views_[id].data, views_[id].ld, p_.cols[id] == N && N > 1};
}

template <class T>
const T* StepRunner<T>::weight_data(int64_t id) const {
  if (id == kNoOperand) return nullptr;
  TORCH_CHECK(id >= 0 && p_.cols[id] < 0, "scan engine: layer norm's affine must be a weight");
  return weight_[id].const_data_ptr<T>();
}

template <class T>
void StepRunner<T>::run_step() {
  for (size_t k = 0; k < p_.nodes.size(); ++k) run_node(k);
}

template <class T>
void StepRunner<T>::run_node(size_t k) {
  const Node& node = p_.nodes[k];
  if (is_product(node.op)) return run_product(k);
  if (!is_pointwise(node.op)) return run_row_node(node);
  const int64_t N = p_.cols[node.outs[0]];
  c10::SmallVector<Operand<T>, 4> in;
  for (int64_t id : node.ins) in.push_back(operand(id, N));
  TORCH_CHECK(run_pointwise<T>(node.op, B_, N, views_[node.outs[0]], in),
              "scan engine: unknown opcode ", static_cast<int64_t>(node.op));
}

template <class T>
void StepRunner<T>::run_product(size_t k) {
  const Node& node = p_.nodes[k];
  const int64_t N = p_.cols[node.outs[0]];
  const Rows<T> out = views_[node.outs[0]];
  const Rows<T> a = views_[node.ins[node.ins.size() - 2]];
  float beta = node.op == Op::kMmAccumulate ? 1.f : 0.f;
  if (node.op == Op::kAddmm) {
    map_rows<T>(B_, N, out, [](auto x) { return x; }, operand(node.ins[0], N));
    beta = 1.f;
  }
  products_[k]->multiply({a.data, a.ld, false}, beta, out.data, out.ld);
}

template <class T>
void StepRunner<T>::run_row_node(const Node& node) {
  const auto in = [&](size_t i) {
    const Rows<T> r = views_[node.ins[i]];
    return Rows<const T>{r.data, r.ld};
  };
  switch (node.op) {
    case Op::kSplit:
      for (size_t i = 0; i < node.outs.size(); ++i) {
        views_[node.outs[i]] = {views_[node.ins[0]].data + node.ints[i], views_[node.ins[0]].ld};
      }
      return;
    case Op::kCat: {
      int64_t first = 0;
      for (size_t i = 0; i < node.ins.size(); ++i) {
        const int64_t n = p_.cols[node.ins[i]];
        copy_rows<T>(B_, n, in(i), views_[node.outs[0]], first);
        first += n;
      }
      return;
    }
    case Op::kSliceBackward: {
      const Rows<T> out = views_[node.outs[0]];
      for (int64_t b = 0; b < B_; ++b) {
        std::fill(out.data + b * out.ld, out.data + b * out.ld + p_.cols[node.outs[0]], T(0));
      }
      copy_rows<T>(B_, p_.cols[node.ins[0]], in(0), out, node.ints.at(0));
      return;
    }
    case Op::kLayerNormBackward:
      layer_norm_backward_rows<T>(B_, p_.cols[node.ins[1]], in(0), in(1), in(2), in(3),
                                  weight_data(node.ins[4]), views_[node.outs[0]],
                                  views_[node.outs[1]]);
      return;
    case Op::kRowSum:
    case Op::kRowMean: {
      const int64_t N = p_.cols[node.ins[0]];
      row_sum<T>(B_, N, in(0), node.op == Op::kRowSum ? T(1) : T(1) / T(N), views_[node.outs[0]]);
      return;
    }
    case Op::kRowMax:
      row_max<T>(B_, p_.cols[node.ins[0]], in(0), views_[node.outs[0]]);
      return;
    case Op::kRowCumsum:
      row_cumsum<T>(B_, p_.cols[node.ins[0]], in(0), views_[node.outs[0]]);
      return;
    case Op::kRowFlip:
      row_flip<T>(B_, p_.cols[node.ins[0]], in(0), views_[node.outs[0]]);
      return;
    case Op::kLayerNorm:
      layer_norm_rows<T>(B_, p_.cols[node.ins[0]], in(0), weight_data(node.ins[1]),
                         weight_data(node.ins[2]), immediates_[-node.ins[3] - 1],
                         views_[node.outs[0]], views_[node.outs[1]], views_[node.outs[2]]);
      return;
    case Op::kAccumulateProduct:
    case Op::kAccumulateColumnSum:
      return accumulate(node);
    default:
      TORCH_CHECK(false, "scan engine: unknown opcode ", static_cast<int64_t>(node.op));
  }
}

template <class T>
void StepRunner<T>::accumulate(const Node& node) {
  T* acc = accumulators_.at(node.ints.at(0));
  if (node.op == Op::kAccumulateColumnSum) {
    const Rows<T> g = views_[node.ins[0]];
    const int64_t N = p_.cols[node.ins[0]];
    for (int64_t b = 0; b < B_; ++b) {
      for (int64_t j = 0; j < N; ++j) acc[j] += g.data[b * g.ld + j];
    }
    return;
  }
  // acc [K, N] += a^T g, or acc [N, K] += g^T a where transposed.
  Rows<T> a = views_[node.ins[0]], g = views_[node.ins[1]];
  int64_t K = p_.cols[node.ins[0]], N = p_.cols[node.ins[1]];
  if (node.ints.at(1) != 0) {
    std::swap(a, g);
    std::swap(K, N);
  }
  if (B_ * K * N > kSmallAccumulateMacs) {
    cpu::gemm<T>(K, N, B_, {a.data, a.ld, true}, {g.data, g.ld, false}, 1.f, acc, N);
    return;
  }
  // Small products: per column block of four rows k of acc, the sums over the rows b of
  // a[b, k] g[b, :] kept in registers, four independent chains (a transposed operand sends
  // small products down the GEMM's general path, which copies g into panels at every step).
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) accumulate_rows<4>(B_, N, a.data + k, a.ld, g, acc + k * N);
  for (; k < K; ++k) accumulate_rows<1>(B_, N, a.data + k, a.ld, g, acc + k * N);
}

template class StepRunner<float>;
template class StepRunner<double>;

}  // namespace rnnfast::scan
