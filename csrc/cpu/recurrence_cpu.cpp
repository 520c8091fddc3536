// The CPU recurrence engine: one layer in one direction, for every cell of cells.h.
//
// Forward: the input projection as one GEMM per chunk of steps; then per step one recurrent
// GEMM into preallocated memory and one fused, vectorised pointwise pass over the batch rows,
// each thread taking a slice of the rows through the chunk's steps where the batch is large
// enough (batch_slices.h). Backward: the reverse loop (pointwise pass, then the recurrent GEMM
// for dh), sliced the same way, then the weight gradients as GEMMs over all steps. Nothing is
// allocated and no op is dispatched per step.
//
// Per-step tensors are kept in the caller's layout ([T, B, X] or [B, T, X]); Seq maps a
// (step, batch) pair to its row.
#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>
#include <vector>

#include "../cell_kind.h"
#include "../checks.h"
#include "../empty_batch.h"
#include "batch_slices.h"
#include "gemm_cpu.h"
#include "scratch_pool.h"
#include "unit_slices.h"
#include "vec_math.h"

namespace rnnfast::cpu {
namespace {

using at::Tensor;
using std::optional;

struct Seq {
  int64_t T, B;
  bool batch_first;
  int64_t row(int64_t t, int64_t b) const { return batch_first ? b * T + t : t * B + b; }
  // Rows between batch entries b and b + 1 at one step: the GEMM leading-dimension factor.
  int64_t batch_step() const { return batch_first ? T : 1; }
};

// The rows of a [T, B, X] or [B, T, X] tensor by (step, batch entry), with any strides along
// T and B and unit stride along X.
template <class T>
struct StridedRows {
  const T* data;
  int64_t stride_t, stride_b;
  const T* row(int64_t t, int64_t b) const { return data + t * stride_t + b * stride_b; }
};

// Tensors handed to the caller, made without a dispatcher call: at::empty and at::zeros
// took 345 and 520 ns here, these 265 and 300 (a small layer's call makes four to eight).
Tensor new_tensor(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  return at::detail::empty_cpu(sizes, opts.dtype().toScalarType(), /*pin_memory=*/false,
                               std::nullopt);
}

Tensor new_zeros(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  Tensor t = new_tensor(sizes, opts);
  if (t.nbytes() > 0) std::memset(t.data_ptr(), 0, t.nbytes());
  return t;
}

// Rows [r0, ...) of a matrix, keeping its layout.
template <class T>
MatrixRef<T> from_row(MatrixRef<T> m, int64_t r0) {
  return {m.trans ? m.data + r0 : m.data + r0 * m.ld, m.ld, m.trans};
}

// Columns [c0, ...) of a matrix, keeping its layout.
template <class T>
MatrixRef<T> from_column(MatrixRef<T> m, int64_t c0) {
  return {m.trans ? m.data + c0 * m.ld : m.data + c0, m.ld, m.trans};
}

template <class T>
MatrixRef<T> dense(const T* data, int64_t ld) {
  return {data, ld, false};
}

// w [R, C] (any strides) copied to a contiguous [C, R]: BLAS runs faster on W^T laid out
// row-major than on W transposed in place, and the copy is paid once per call, not per step.
// In 16 x 16 tiles, through ATen's SIMD transpose where w's rows are contiguous (every
// nn.Module weight): a plain loop took 9 us of the 70 of a small LSTM layer's forward (two
// 128 x 32 weights), and ATen's copy of w.t() moved 3 GB/s here (1 ms for 1024 x 1024).
// Into pooled memory: a fresh MiB would be new pages at every call (scratch_pool.h).
template <class T>
void transposed_copy(const Tensor& w, T* dst, int64_t ld) {
  const int64_t R = w.size(0), C = w.size(1), s0 = w.stride(0), s1 = w.stride(1);
  const T* src = w.const_data_ptr<T>();
  constexpr int64_t kTile = 16;
  for (int64_t r0 = 0; r0 < R; r0 += kTile) {
    const int64_t rows = std::min(kTile, R - r0);
    for (int64_t c0 = 0; c0 < C; c0 += kTile) {
      const int64_t cols = std::min(kTile, C - c0);
      if (s1 == 1) {
        at::vec::transpose_mxn<T>(src + r0 * s0 + c0, s0, dst + c0 * ld + r0, ld,
                                  static_cast<int>(rows), static_cast<int>(cols));
        continue;
      }
      for (int64_t r = r0; r < r0 + rows; ++r) {
        for (int64_t c = c0; c < c0 + cols; ++c) dst[c * ld + r] = src[r * s0 + c * s1];
      }
    }
  }
}

// The row stride of a weight's transposed copy with `columns` columns: a cache line more than
// dense where a dense row would span a multiple of 1 KiB. Rows that far apart fall into a few
// cache sets, so a product that walks down the rows of a weight (a step's, at small B) keeps
// little of it cached from one step to the next: an LSTM step with H = 256 at B = 1 (a 4 KiB
// stride) took 28 us here, against 12-14 us for H = 248 and 264.
template <class T>
int64_t copy_row_stride(int64_t columns) {
  constexpr int64_t kLine = 64 / sizeof(T);
  return (columns * int64_t(sizeof(T))) % 1024 == 0 ? columns + kLine : columns;
}

// Elements of the transposed copy of w [R, C]: C rows of copy_row_stride(R).
template <class T>
int64_t transposed_copy_size(const Tensor& w) {
  return w.size(1) * copy_row_stride<T>(w.size(0));
}

// Weights of at most this many elements are copied transposed even for a single step.
constexpr int64_t kSmallWeightElements = 4096;

// Below this many multiply-adds, a forward whose steps run on one thread (a single batch
// slice) forms its input projection on that thread too, where BLAS would split it from 1M
// (kThreadedGemmMacs in gemm_cpu.cpp): the step loop, which reads the projection next, ran
// 40 % longer after a split one. Without grad, B = 8, I = 32: the LSTM with H = 32 went from
// 85 to 60 us at T = 32 and from 140 to 106 us at T = 60, with H = 128 (B = 4, T = 30) from
// 239 to 208 us; with H = 256 (B = 4, T = 15) nothing changed.
constexpr int64_t kLocalProjectionMacs = 1 << 21;

// W^T for a weight w [R, C], as the right-hand operand of the products x @ W^T: copied into
// copy_to ([C, R] with rows copy_row_stride(R) apart, where not null) or read in place. A
// row-major copy makes those plain row-major GEMMs (faster, and the only kind the small-GEMM
// kernel takes), which pays once the weight serves a few rows over several steps (copy_weight
// below).
template <class T>
MatrixRef<T> weight_transposed(const Tensor& w, T* copy_to, Tensor& storage) {
  if (copy_to != nullptr) {
    const int64_t ld = copy_row_stride<T>(w.size(0));
    transposed_copy<T>(w, copy_to, ld);
    return dense(static_cast<const T*>(copy_to), ld);
  }
  const MatrixRef<T> m = matrix_ref<T>(w, storage);
  return {m.data, m.ld, !m.trans};
}

// Runs f(b) for the batch rows b in [b0, b1), in parallel where a step's pointwise work is
// large enough to pay for waking the other threads (the GEMMs are threaded by BLAS itself):
// from about 8k gate values a step, 4k a thread (at LM, B = 32 rows of 768 or 1024, the
// forward took 15 % less than with the rows on one thread). Large layers gain twice: their
// outputs are fresh memory, whose page faults are then taken on every thread instead of one.
// Inside a batch slice (below) it runs on the calling thread. Rows too few to split run here
// without asking at::parallel_for, whose thread-local guards and checks cost about as much as a
// small step's pointwise work.
// Plain row copies pass a larger `work` (elements per thread): a copy is cheap per element.
template <class F>
void for_each_row(int64_t b0, int64_t b1, int64_t width, const F& f, int64_t work = 1 << 12) {
  const int64_t grain = std::max<int64_t>(1, work / std::max<int64_t>(width, 1));
  if (b1 - b0 <= grain) {
    for (int64_t b = b0; b < b1; ++b) f(b);
    return;
  }
  at::parallel_for(b0, b1, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t b = r0; b < r1; ++b) f(b);
  });
}

// Elements of a row copy per thread: below this, waking another thread costs more than it saves.
constexpr int64_t kCopyWork = 1 << 15;

// Batch-first steps of at least this many rows are GEMM operands of their own in the weight
// gradients (strided rows, in place); fewer are copied into one time-major matrix first, as
// GEMMs over so few rows run well below BLAS's rate (at 64 rows, a GEMM per step and the copy
// measured the same).
constexpr int64_t kStepGemmRows = 128;

// The steps of a chunk, for T steps in chunks of about `target` steps: T split evenly, where
// a remainder would leave a last chunk of a few steps, whose GEMMs over few rows run well below
// BLAS's rate (and which costs a round of fixed costs of its own); a single chunk up to a
// quarter over the target. At LM (T = 35), the backward's target of 32 steps had left a last
// chunk of 3.
inline int64_t even_chunks(int64_t T, int64_t target) {
  target = std::clamp<int64_t>(target, 1, T);
  if (T <= target + target / 4) return T;
  const int64_t chunks = (T + target - 1) / target;
  return (T + chunks - 1) / chunks;
}

template <class T>
void zero_row(T* p, int64_t n) {
  std::fill(p, p + n, T(0));
}

template <class Cell, class scalar_t>
class Recurrence {
  using acc_t = at::opmath_type<scalar_t>;
  using V = VecOf<scalar_t>;
  static constexpr auto kScalar = c10::CppTypeToScalarType<scalar_t>::value;
  static constexpr auto kAcc = c10::CppTypeToScalarType<acc_t>::value;
  static constexpr int G = Cell::kGates;
  static constexpr int S = Cell::kSaved;
  static constexpr int kSavedSlots = S > 0 ? S : 1;
  // Gates from kSplit on keep b_hh on the recurrent side; only their recurrent-side gradient
  // differs from the input-side one, so only they get a buffer of their own.
  static constexpr int kSplit = Cell::kRecurrentBiasFrom;

 public:
  Recurrence(const LayerSizes& sizes, bool reverse, bool batch_first, const Tensor& weight_hh,
             const optional<Tensor>& weight_hr, const optional<Tensor>& lengths)
      : s_(sizes),
        seq_{sizes.T, sizes.B, batch_first},
        reverse_(reverse),
        GH_(G * sizes.H),
        weight_hh_(weight_hh),
        weight_hr_(weight_hr),
        projection_(weight_hr.has_value()) {
    if (lengths.has_value()) {
      lengths_storage_ = lengths->to(at::kLong).contiguous();
      lengths_ = lengths_storage_.const_data_ptr<int64_t>();
    }
  }

  // input [N, I], weight_ih [G*H, I], biases [G*H]; h0 [B, P], c0 [B, H].
  // Returns output [N, P], h_n [B, P], c_n [B, H] (or empty), saved [N, S*H] (or empty, and
  // then not computed, when need_saved is false).
  std::tuple<Tensor, Tensor, Tensor, Tensor> forward(const Tensor& input, const Tensor& weight_ih,
                                                     const optional<Tensor>& bias_ih,
                                                     const optional<Tensor>& bias_hh,
                                                     const optional<Tensor>& hx,
                                                     const optional<Tensor>& cx, bool need_saved) {
    const int64_t T = s_.T, B = s_.B, H = s_.H, P = s_.P;
    const auto opts = input.options();
    const auto acc_opts = opts.dtype(c10::CppTypeToScalarType<acc_t>::value);
    Tensor output = new_tensor(sequence_shape(s_, P, seq_.batch_first), opts);
    Tensor h_n =
        hx.has_value() ? hx->clone(at::MemoryFormat::Contiguous) : new_zeros({B, P}, opts);
    Tensor c_state;
    if constexpr (Cell::kHasCellState) {
      c_state = cx.has_value() ? cx->to(acc_opts, /*non_blocking=*/false, /*copy=*/true,
                                        at::MemoryFormat::Contiguous)
                               : new_zeros({B, H}, acc_opts);
    }
    Tensor saved = (S > 0 && need_saved)
                       ? new_tensor(sequence_shape(s_, S * H, seq_.batch_first), opts)
                       : new_tensor({0}, opts);
    // The input projection is formed for a chunk of steps at a time: a buffer of about 8 MiB,
    // mostly cache-resident, instead of one the size of the sequence (and of the peak memory).
    const int64_t chunk = even_chunks(T, (1 << 21) / std::max<int64_t>(B * GH_, 1));
    // Chunks are formed time-major. A single chunk takes the input in the caller's layout; a
    // batch-first one is projected a step at a time (a step's rows are evenly strided) where
    // a step has rows enough for an efficient GEMM, else from a time-major copy of the input.
    const bool one_chunk = chunk == T;
    const bool per_step_projection = seq_.batch_first && !one_chunk && B >= 32;
    const Tensor x =
        (seq_.batch_first && !one_chunk && !per_step_projection ? input.transpose(0, 1) : input)
            .contiguous();
    // The n part of the reset-before GRU's recurrent product waits for r * h.
    const int64_t gh_cols = Cell::kResetBefore ? 2 * H : GH_;
    const BatchSlices slices = batch_slices(B, T, recurrent_weights());
    const int64_t slice_rows = slices.rows;
    // Too few rows to split: the units instead (unit_slices.h), products from the plain
    // transposed copy of W_hh (a split sequence has steps enough for copy_weight), whose
    // columns a thread can take as they lie. Not with the LSTM projection, whose product needs
    // every unit's output before any row of h.
    const int64_t unit_threads = projection_ ? 1 : unit_slice_threads(B, T, H, recurrent_weights());
    // A single step (a cell's call) reads its weights in place unless they are small: BLAS takes
    // them as they lie at the same speed, and copying a 512 x 512 weight for one product of 16
    // rows took longer than the product.
    const auto copy_weight = [&](const Tensor& w) {
      return T * B >= 16 && (T > 1 || w.numel() <= kSmallWeightElements);
    };
    // A packed weight is copied into the packed layout anyway, from any layout.
    using Packed = PackedMatrix<scalar_t>;
    const bool w_hh_packed = unit_threads == 1 && Packed::packs(slice_rows, gh_cols, P, T) &&
                             (!Cell::kResetBefore || Packed::packs(slice_rows, H, H, T));
    const bool copy_w_ih = copy_weight(weight_ih);
    const bool copy_w_hh = copy_weight(weight_hh_) && !w_hh_packed;
    const bool copy_w_hr =
        projection_ && copy_weight(*weight_hr_) && !Packed::packs(slice_rows, P, H, T);

    // The call's buffers, from one acquisition of the scratch pool (each costs a lock and a
    // tensor): gx [chunk * B, G*H] | gh [B, G*H] | projected h [B, P], in the compute type;
    // r * h for the reset-before GRU, or the unprojected LSTM output, [B, H]; the weights'
    // transposed copies.
    ScratchLayout layout;
    const int64_t gx_at = layout.add<acc_t>(chunk * B * GH_ + B * GH_ + (projection_ ? B * P : 0));
    const int64_t step_input_at =
        layout.add<scalar_t>((Cell::kResetBefore || projection_) ? B * H : 0);
    const int64_t w_ih_at =
        layout.add<scalar_t>(copy_w_ih ? transposed_copy_size<scalar_t>(weight_ih) : 0);
    const int64_t w_hh_at =
        layout.add<scalar_t>(copy_w_hh ? transposed_copy_size<scalar_t>(weight_hh_) : 0);
    const int64_t w_hr_at =
        layout.add<scalar_t>(copy_w_hr ? transposed_copy_size<scalar_t>(*weight_hr_) : 0);
    Tensor scratch = scratch_empty({layout.bytes()}, at::kByte);
    acc_t* gx = section_of<acc_t>(scratch, gx_at);
    acc_t* gh = gx + chunk * B * GH_;
    acc_t* projected = gh + B * GH_;
    scalar_t* aux = section_of<scalar_t>(scratch, step_input_at);

    Tensor w_ih_storage, w_hh_storage, w_hr_storage;  // where a layout needs a contiguous copy
    const MatrixRef<scalar_t> w_ih_ref = weight_transposed<scalar_t>(  // [I, G*H]
        weight_ih, copy_w_ih ? section_of<scalar_t>(scratch, w_ih_at) : nullptr, w_ih_storage);
    const MatrixRef<scalar_t> w_hh_ref = weight_transposed<scalar_t>(  // [P, G*H]
        weight_hh_, copy_w_hh ? section_of<scalar_t>(scratch, w_hh_at) : nullptr, w_hh_storage);
    scalar_t* w_hr_copy = copy_w_hr ? section_of<scalar_t>(scratch, w_hr_at) : nullptr;
    const MatrixRef<scalar_t> w_hr_ref =  // [H, P]
        projection_ ? weight_transposed<scalar_t>(*weight_hr_, w_hr_copy, w_hr_storage) : w_hh_ref;
    int64_t chunk_t0 = 0;  // the first (smallest) step of the chunk held in gx
    const std::vector<acc_t> biases = split_biases(bias_ih, bias_hh);
    const acc_t* input_bias = biases.empty() ? nullptr : biases.data();
    const acc_t* recurrent_bias =
        (biases.empty() || Cell::kRecurrentBiasFrom >= G) ? nullptr : biases.data() + GH_;

    scalar_t* out = output.data_ptr<scalar_t>();
    scalar_t* h = h_n.data_ptr<scalar_t>();
    acc_t* c = Cell::kHasCellState ? c_state.data_ptr<acc_t>() : nullptr;
    scalar_t* sv = saved.numel() > 0 ? saved.data_ptr<scalar_t>() : nullptr;
    // The per-step products of a slice of `rows` batch rows, packed for that row count.
    struct StepProducts {
      Packed recurrent, reset_recurrent, projection;
    };
    const auto step_products = [&](int64_t rows) {
      return StepProducts{
          Packed(rows, gh_cols, P, w_hh_ref, T),
          Packed(Cell::kResetBefore ? rows : 0, H, H, from_column(w_hh_ref, 2 * H), T),
          Packed(projection_ ? rows : 0, P, H, w_hr_ref, T)};
    };
    // Each slice's, made by the thread that runs it (in its cache) at the first chunk.
    std::vector<std::optional<StepProducts>> slice_products(slices.count);

    // Row b of step t's input projection [G*H].
    const auto gx_row_of = [&](int64_t t, int64_t b) {
      return gx + (one_chunk ? seq_.row(t, b) : (t - chunk_t0) * B + b) * GH_;
    };
    // Reset-before GRU, step t, rows [b0, b1), units [j0, j1): r * h into aux.
    const auto reset_pass = [&](int64_t t, int64_t b0, int64_t b1, int64_t j0, int64_t j1) {
      if constexpr (Cell::kResetBefore) {
        for_each_row(b0, b1, j1 - j0, [&](int64_t b) {
          if (!active(t, b)) return;
          const acc_t* gx_row = gx_row_of(t, b);
          for_each_chunk<scalar_t>(j1 - j0, [&](int64_t k, int64_t n) {
            const int64_t j = j0 + k;
            V gx_r = load(gx_row + j, n);
            if (input_bias) gx_r = gx_r + load(input_bias + j, n);
            store(aux + b * H + j,
                  Cell::reset_forward(gx_r, load(gh + b * GH_ + j, n), load(h + b * P + j, n)),
                  n);
          });
        });
      }
    };
    // Step t's pointwise pass for rows [b0, b1) and units [j0, j1), once gh holds their
    // recurrent products.
    const auto pointwise = [&](int64_t t, int64_t b0, int64_t b1, int64_t j0, int64_t j1) {
      for_each_row(b0, b1, G * (j1 - j0), [&](int64_t b) {
        const int64_t row = seq_.row(t, b);
        if (!active(t, b)) {
          // The output row's units (P wide where the units are all of them: the projection).
          zero_row(out + row * P + j0, (j1 == H ? P : j1) - j0);
          if (sv) {
            for (int k = 0; k < S; ++k) zero_row(sv + row * S * H + k * H + j0, j1 - j0);
          }
          return;
        }
        const acc_t* gx_row = gx_row_of(t, b);
        const acc_t* gh_row = gh + b * GH_;
        scalar_t* h_row = h + b * P;
        scalar_t* out_row = out + row * P;
        scalar_t* saved_row = sv ? sv + row * S * H : nullptr;
        // One chunk of n elements, as a vector W (V, or VecPairOf for two full vectors).
        const auto chunk = [&](auto vector_type, int64_t j, int64_t n) {
          using W = decltype(vector_type);
          const auto ld = [n](const auto* p) {
            if constexpr (std::is_same_v<W, V>) {
              return load(p, n);
            } else {
              return load_pair(p);
            }
          };
          W vgx[G], vgh[G], vsaved[kSavedSlots];
          for (int g = 0; g < G; ++g) {
            vgx[g] = ld(gx_row + g * H + j);
            vgh[g] = ld(gh_row + g * H + j);
            if (input_bias) vgx[g] = vgx[g] + ld(input_bias + g * H + j);
            if (recurrent_bias) vgh[g] = vgh[g] + ld(recurrent_bias + g * H + j);
          }
          const W h_prev = Cell::kHasCellState ? W(0) : ld(h_row + j);
          const W c_prev = Cell::kHasCellState ? ld(c + b * H + j) : W(0);
          W h_out, c_out;
          Cell::forward(vgx, vgh, h_prev, c_prev, h_out, c_out, vsaved);
          if (saved_row) {
            for (int k = 0; k < S; ++k) store(saved_row + k * H + j, vsaved[k], n);
          }
          if constexpr (Cell::kHasCellState) store(c + b * H + j, c_out, n);
          if (projection_) {
            store(aux + b * H + j, h_out, n);
          } else {
            store(h_row + j, h_out, n);
            store(out_row + j, h_out, n);
          }
        };
        for_each_chunk_pair<scalar_t>(
            j1 - j0, [&](int64_t k) { chunk(VecPairOf<scalar_t>{}, j0 + k, 2 * V::size()); },
            [&](int64_t k, int64_t n) { chunk(V{}, j0 + k, n); });
      });
    };

    // Step t of the batch rows [b0, b1).
    const auto step_rows = [&](int64_t t, int64_t b0, int64_t b1, const StepProducts& products) {
      products.recurrent.multiply(dense<scalar_t>(h + b0 * P, P), 0.f, gh + b0 * GH_, GH_);
      if constexpr (Cell::kResetBefore) {
        reset_pass(t, b0, b1, 0, H);
        products.reset_recurrent.multiply(dense<scalar_t>(aux + b0 * H, H), 0.f,
                                          gh + b0 * GH_ + 2 * H, GH_);
      }
      pointwise(t, b0, b1, 0, H);
      if (projection_) {
        products.projection.multiply(dense<scalar_t>(aux + b0 * H, H), 0.f, projected + b0 * P, P);
        for_each_row(b0, b1, P, [&](int64_t b) {
          if (!active(t, b)) return;
          for (int64_t j = 0; j < P; ++j) {
            const scalar_t v = static_cast<scalar_t>(projected[b * P + j]);
            h[b * P + j] = v;
            out[seq_.row(t, b) * P + j] = v;
          }
        });
      }
    };

    // Step t of every row for the units [j0, j1) of a unit slice: its columns of each gate's
    // products (all of h read), then, once every thread has read h, their pointwise math
    // (its units of h written); the step ends when all have written theirs.
    const auto step_units = [&](int64_t t, int64_t j0, int64_t j1, const UnitTeam& team) {
      const int64_t units = j1 - j0;
      team.work([&] {
        for (int g = 0; g < gh_cols / H; ++g) {
          gemm<scalar_t>(B, units, P, dense<scalar_t>(h, P), from_column(w_hh_ref, g * H + j0),
                         0.f, gh + g * H + j0, GH_);
        }
      });
      if constexpr (Cell::kResetBefore) {
        team.work([&] { reset_pass(t, 0, B, j0, j1); });
        // Every thread has read h, and all of r * h, which W_hn's columns read, is written.
        team.barrier();
        team.work([&] {
          gemm<scalar_t>(B, units, H, dense<scalar_t>(aux, H), from_column(w_hh_ref, 2 * H + j0),
                         0.f, gh + 2 * H + j0, GH_);
        });
      } else {
        team.barrier();  // every thread has read h
      }
      team.work([&] { pointwise(t, 0, B, j0, j1); });
      team.barrier();
    };

    for (int64_t done = 0; done < T; done += chunk) {
      const int64_t steps = std::min(chunk, T - done);
      chunk_t0 = reverse_ ? T - done - steps : done;
      const scalar_t* x_data = x.const_data_ptr<scalar_t>();
      {
        const SingleThreadedBlas projection_on_this_thread(
            slices.count == 1 && steps * B * GH_ * s_.I < kLocalProjectionMacs);
        if (per_step_projection) {
          for (int64_t k = 0; k < steps; ++k) {
            gemm<scalar_t>(B, GH_, s_.I,
                           dense(x_data + seq_.row(chunk_t0 + k, 0) * s_.I, T * s_.I), w_ih_ref,
                           0.f, gx + k * B * GH_, GH_);
          }
        } else {
          gemm<scalar_t>(steps * B, GH_, s_.I,
                         dense(x_data + (one_chunk ? 0 : chunk_t0 * B * s_.I), s_.I), w_ih_ref,
                         0.f, gx, GH_);
        }
      }
      const auto step_of = [&](int64_t k) {
        return reverse_ ? chunk_t0 + steps - 1 - k : chunk_t0 + k;
      };
      if (unit_threads > 1) {
        for_each_unit_slice(H, unit_threads, [&](int64_t j0, int64_t j1, const UnitTeam& team) {
          for (int64_t k = 0; k < steps; ++k) step_units(step_of(k), j0, j1, team);
        });
        continue;
      }
      for_each_slice(slices, [&](int64_t i) {
        const int64_t b0 = slices.begin(i), b1 = slices.end(i, B);
        if (!slice_products[i]) slice_products[i].emplace(step_products(b1 - b0));
        for (int64_t k = 0; k < steps; ++k) step_rows(step_of(k), b0, b1, *slice_products[i]);
      });
    }
    Tensor c_n = Cell::kHasCellState ? c_state.to(opts.dtype()) : new_tensor({0}, opts);
    return {output, h_n, c_n, saved};
  }

  // Gradients of (input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx, weight_hr); those
  // not asked for in `mask` come back empty.
  //
  // The reverse loop runs over chunks of steps (some MiB of buffers each, like the forward's
  // input projection); after each chunk its share of the weight and input gradients is added
  // as GEMMs over the chunk's rows. So the buffers of per-step gradients never grow with T.
  std::array<Tensor, 8> backward(const optional<Tensor>& grad_output,
                                 const optional<Tensor>& grad_h_n, const optional<Tensor>& grad_c_n,
                                 const Tensor& input, const Tensor& weight_ih,
                                 const optional<Tensor>& hx, const Tensor& output,
                                 const Tensor& saved, std::array<bool, 8> mask) {
    const int64_t T = s_.T, B = s_.B, H = s_.H, P = s_.P, I = s_.I;
    const auto opts = output.options();
    const auto acc_opts = opts.dtype(c10::CppTypeToScalarType<acc_t>::value);
    const Tensor g_out_t = grad_output.has_value() ? row_addressable(*grad_output) : Tensor();
    const Tensor out_t = output.contiguous();
    const Tensor saved_t = saved.contiguous();
    const Tensor h0_t = hx.has_value() ? hx->contiguous() : new_zeros({B, P}, opts);
    const Tensor x_t = input.contiguous();

    const int64_t SH = (G - kSplit) * H;  // width of the separate recurrent gradients
    // Per row of a chunk: d_gates_x, d_gates_h, h_prev, reset_h / unprojected, d_projected,
    // the input rows and their gradient.
    // About 16 MiB of them in float32, and at least 1024 rows so the GEMMs stay efficient
    // (at M, RNN: 3 chunks of 34 steps took 2 % less than 6 of 17; 32 MiB, no less again).
    const int64_t row_width = GH_ + SH + P + 2 * H + P + 2 * I;
    const int64_t chunk = even_chunks(
        T, std::max((1 << 22) / std::max<int64_t>(B * row_width, 1), (1023 + B) / B));
    const int64_t R = chunk * B;  // rows of a chunk, time-major: (t - first t) * B + b
    // The weight gradients' GEMMs read h_prev from the output, and the input, where they lie,
    // and from a copy of the chunk's rows otherwise: where reversed sequences of different
    // lengths start from h0 at different steps, or where padding must be zeroed, or where
    // batch-first steps have too few rows for efficient GEMMs of their own.
    const bool h_prev_in_place = step_rows_together() && !(reverse_ && lengths_);
    const bool x_in_place = step_rows_together() && !lengths_;
    // The chunk's buffers, [R, *] each (empty where not needed), from one acquisition of the
    // scratch pool, as the forward's.
    ScratchLayout layout;
    const int64_t dgx_at = layout.add<scalar_t>(R * GH_);
    const int64_t dgh_at = layout.add<scalar_t>(SH > 0 ? R * SH : 0);
    const int64_t hp_at = layout.add<scalar_t>(h_prev_in_place ? 0 : R * P);
    const int64_t rh_at = layout.add<scalar_t>(Cell::kResetBefore ? R * H : 0);
    const int64_t um_at = layout.add<scalar_t>(projection_ ? R * H : 0);
    const int64_t dproj_at = layout.add<scalar_t>(projection_ ? R * P : 0);
    const int64_t x_copy_at = layout.add<scalar_t>(mask[1] && !x_in_place ? R * I : 0);
    // Only where grad_input does not take the products directly (see input_gradient).
    const int64_t dx_rows_at =
        layout.add<acc_t>(mask[0] && !dx_in_place() ? R * I : 0);
    // d(unprojected output) or d(r * h): [B, H]
    const int64_t daux_at = layout.add<acc_t>((Cell::kResetBefore || projection_) ? B * H : 0);
    const Tensor scratch = scratch_empty({layout.bytes()}, at::kByte);
    Tensor dh_state = grad_h_n.has_value() ? grad_h_n->to(acc_opts, false, /*copy=*/true,
                                                          at::MemoryFormat::Contiguous)
                                           : new_zeros({B, P}, acc_opts);
    Tensor dc_state =
        Cell::kHasCellState && grad_c_n.has_value()
            ? grad_c_n->to(acc_opts, false, /*copy=*/true, at::MemoryFormat::Contiguous)
            : new_zeros({Cell::kHasCellState ? B : 0, H}, acc_opts);
    // The gradients summed over chunks, in the compute type; the first chunk's products
    // overwrite them (every row of them), the later ones add.
    Tensor grad_w_ih = new_tensor({mask[1] ? GH_ : 0, I}, acc_opts);
    Tensor grad_w_hh = new_tensor({mask[2] ? GH_ : 0, P}, acc_opts);
    Tensor grad_w_hr = new_tensor({mask[7] && projection_ ? P : 0, H}, acc_opts);
    std::vector<acc_t> input_bias_sums(mask[3] || mask[4] ? GH_ : 0, acc_t(0));
    std::vector<acc_t> recurrent_bias_sums(mask[4] ? SH : 0, acc_t(0));
    Tensor grad_input = mask[0] ? new_tensor(input.sizes(), opts) : new_tensor({0}, opts);

    const StridedRows<scalar_t> g_out = strided_rows(g_out_t);
    const scalar_t* out = out_t.const_data_ptr<scalar_t>();
    const scalar_t* sv = S > 0 ? saved_t.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* h0 = h0_t.const_data_ptr<scalar_t>();
    const scalar_t* x = x_t.const_data_ptr<scalar_t>();
    scalar_t* dgx = section_of<scalar_t>(scratch, dgx_at);
    scalar_t* dgh = section_of<scalar_t>(scratch, dgh_at);
    scalar_t* hp = h_prev_in_place ? nullptr : section_of<scalar_t>(scratch, hp_at);
    scalar_t* rh = section_of<scalar_t>(scratch, rh_at);
    scalar_t* um = section_of<scalar_t>(scratch, um_at);
    scalar_t* dproj = section_of<scalar_t>(scratch, dproj_at);
    scalar_t* x_copy = section_of<scalar_t>(scratch, x_copy_at);
    acc_t* dx_rows = section_of<acc_t>(scratch, dx_rows_at);
    acc_t* dh = dh_state.data_ptr<acc_t>();
    acc_t* dc = dc_state.data_ptr<acc_t>();
    acc_t* daux = section_of<acc_t>(scratch, daux_at);
    // Rows of W_hh whose share of dh_prev comes from dgx (the reset-before GRU's n rows
    // act on r * h and are handled through d(r * h)).
    const int64_t x_rows = Cell::kResetBefore ? 2 * H : kSplit * H;
    Tensor w_hh_storage, w_hr_storage, w_ih_storage;
    const MatrixRef<scalar_t> w_hh = matrix_ref<scalar_t>(weight_hh_, w_hh_storage);
    const MatrixRef<scalar_t> w_hr =
        projection_ ? matrix_ref<scalar_t>(*weight_hr_, w_hr_storage) : MatrixRef<scalar_t>{};
    const MatrixRef<scalar_t> w_ih =
        mask[0] ? matrix_ref<scalar_t>(weight_ih, w_ih_storage) : MatrixRef<scalar_t>{};
    const BatchSlices slices = batch_slices(B, T, recurrent_weights());
    const auto reverse_products = [&](int64_t rows) {
      using Packed = PackedMatrix<scalar_t>;
      return ReverseProducts{
          Packed(rows, P, x_rows, w_hh, T),
          Packed(SH > 0 ? rows : 0, P, SH, from_row(w_hh, kSplit * H), T),
          Packed(Cell::kResetBefore ? rows : 0, H, H, from_row(w_hh, 2 * H), T),
          Packed(projection_ ? rows : 0, H, P, projection_ ? w_hr : w_hh, T)};
    };
    // Each slice's, made by the thread that runs it at the first chunk.
    std::vector<std::optional<ReverseProducts>> slice_products(slices.count);

    for (int64_t done = 0; done < T; done += chunk) {
      const int64_t steps = std::min(chunk, T - done);
      // Backward visits step T-1-done down to T-done-steps; t0: the chunk's smallest t.
      const int64_t step_hi = T - 1 - done, step_lo = step_hi - steps + 1;
      const int64_t t0 = reverse_ ? T - 1 - step_hi : step_lo;
      for_each_slice(slices, [&](int64_t i) {
        const int64_t b0 = slices.begin(i), b1 = slices.end(i, B);
        if (!slice_products[i]) slice_products[i].emplace(reverse_products(b1 - b0));
        for (int64_t step = step_hi; step >= step_lo; --step) {
          const int64_t t = reverse_ ? T - 1 - step : step;
          backward_step(t, (t - t0) * B, b0, b1, g_out, out, sv, h0, dgx, dgh, hp, rh, um, dproj,
                        dh, dc, daux, *slice_products[i]);
        }
      });
      // This chunk's share of the gradients: GEMMs over its steps * B rows.
      const int64_t rows = steps * B;
      const float beta = done == 0 ? 0.f : 1.f;
      const MatrixRef<scalar_t> dgx_t{dgx, GH_, true};  // [GH, rows] as dgx^T
      if (mask[2]) {
        acc_t* gw = grad_w_hh.data_ptr<acc_t>();
        add_h_prev_products(x_rows, dgx_t, t0, steps, out, h0, hp, beta, gw);
        if (SH > 0) {
          add_h_prev_products(SH, {dgh, SH, true}, t0, steps, out, h0, hp, beta,
                              gw + kSplit * H * P);
        }
        if constexpr (Cell::kResetBefore) {  // rows n multiply r * h_prev
          gemm<scalar_t>(H, P, rows, {dgx + 2 * H, GH_, true}, dense<scalar_t>(rh, H), beta,
                         gw + 2 * H * P, P);
        }
      }
      if (!input_bias_sums.empty()) add_column_sums(dgx, rows, GH_, input_bias_sums.data());
      if (!recurrent_bias_sums.empty()) add_column_sums(dgh, rows, SH, recurrent_bias_sums.data());
      if (grad_w_hr.numel() > 0) {
        gemm<scalar_t>(P, H, rows, {dproj, P, true}, dense<scalar_t>(um, H), beta,
                       grad_w_hr.data_ptr<acc_t>(), H);
      }
      if (mask[1]) {
        acc_t* gw = grad_w_ih.data_ptr<acc_t>();
        if (x_in_place) {
          add_step_products(GH_, I, dgx_t, x, t0, 0, 0, steps, beta, gw);
        } else {
          gemm<scalar_t>(GH_, I, rows, dgx_t, chunk_input(x, t0, steps, x_copy), beta, gw,
                         I);
        }
      }
      if (mask[0]) input_gradient(dgx, t0, steps, w_ih, dx_rows, grad_input);
    }

    std::array<Tensor, 8> grads;
    if (mask[0]) grads[0] = grad_input;
    if (mask[1]) grads[1] = grad_w_ih.to(opts.dtype());
    if (mask[2]) grads[2] = grad_w_hh.to(opts.dtype());
    if (mask[3]) grads[3] = sums_tensor(input_bias_sums, 0, GH_, opts);
    if (mask[4]) {
      grads[4] = sums_tensor(input_bias_sums, 0, kSplit * H, opts);
      if (SH > 0) grads[4] = at::cat({grads[4], sums_tensor(recurrent_bias_sums, 0, SH, opts)});
    }
    if (mask[5]) grads[5] = dh_state.to(opts.dtype());
    if (mask[6] && Cell::kHasCellState) grads[6] = dc_state.to(opts.dtype());
    if (mask[7] && projection_) grads[7] = grad_w_hr.to(opts.dtype());
    for (auto& g : grads) {
      if (!g.defined()) g = new_tensor({0}, opts);
    }
    return grads;
  }

 private:
  // The per-step products of the reverse loop, packed for a slice's row count:
  // dh_prev += dG W_hh (the gates before the split, then those after it), d(r * h) = dn W_hn
  // (reset-before GRU), d(unprojected output) = dh W_hr (LSTM projection).
  struct ReverseProducts {
    PackedMatrix<scalar_t> recurrent, split_recurrent, reset_recurrent, projection;
  };

  // Step t of the reverse loop for the batch rows [b0, b1). Rows of the chunk buffers (dgx, dgh,
  // hp, rh, um, dproj) start at `first_row` (= (t - the chunk's first t) * B); out, g_out and sv
  // hold all T steps in the caller's layout. hp is null where the weight gradients read h_prev
  // in place.
  void backward_step(int64_t t, int64_t first_row, int64_t b0, int64_t b1,
                     StridedRows<scalar_t> g_out, const scalar_t* out, const scalar_t* sv,
                     const scalar_t* h0, scalar_t* dgx, scalar_t* dgh, scalar_t* hp, scalar_t* rh,
                     scalar_t* um, scalar_t* dproj, acc_t* dh, acc_t* dc, acc_t* daux,
                     const ReverseProducts& products) const {
    const int64_t P = s_.P, H = s_.H, SH = (G - kSplit) * H;
    const int64_t slice_row = first_row + b0;  // the chunk-buffer row of batch entry b0
    if (projection_) {
      // dh += grad_output[t]; keep it per step for d(weight_hr); d(unprojected) = dh W_hr.
      for_each_row(b0, b1, P, [&](int64_t b) {
        const int64_t local = first_row + b;
        if (!active(t, b)) {
          zero_row(dproj + local * P, P);
          return;
        }
        for (int64_t j = 0; j < P; ++j) {
          if (g_out.data) dh[b * P + j] += static_cast<acc_t>(g_out.row(t, b)[j]);
          dproj[local * P + j] = static_cast<scalar_t>(dh[b * P + j]);
        }
      });
      products.projection.multiply(dense<scalar_t>(dproj + slice_row * P, P), 0.f, daux + b0 * H,
                                   H);
    }
    for_each_row(b0, b1, GH_, [&](int64_t b) {
      const int64_t row = seq_.row(t, b), local = first_row + b;
      if (!active(t, b)) {
        zero_row(dgx + local * GH_, GH_);
        if (SH > 0) zero_row(dgh + local * SH, SH);
        if (hp) zero_row(hp + local * P, P);
        if (Cell::kResetBefore) zero_row(rh + local * H, H);
        if (projection_) zero_row(um + local * H, H);
        return;
      }
      const scalar_t* h_prev_row = h_prev_of(t, b, out, h0);
      if (hp) std::copy(h_prev_row, h_prev_row + P, hp + local * P);
      const scalar_t* out_row = out + row * P;
      const scalar_t* g_out_row = g_out.data ? g_out.row(t, b) : nullptr;
      const scalar_t* saved_row = sv ? sv + row * S * H : nullptr;
      for_each_chunk<scalar_t>(H, [&](int64_t j, int64_t n) {
        V vsaved[kSavedSlots], vdgx[G], vdgh[G];
        for (int k = 0; k < S; ++k) vsaved[k] = load(saved_row + k * H + j, n);
        // The gradient w.r.t. this step's (unprojected) output.
        V d_out = projection_ ? load(daux + b * H + j, n) : load(dh + b * P + j, n);
        if (!projection_ && g_out_row) d_out = d_out + load(g_out_row + j, n);
        const V dc_out = Cell::kHasCellState ? load(dc + b * H + j, n) : V(0);
        // The LSTM reads neither (its output may be projected to another size).
        const V h_prev = Cell::kHasCellState ? V(0) : load(h_prev_row + j, n);
        const V h_out = Cell::kHasCellState ? V(0) : load(out_row + j, n);
        V dh_prev, dc_prev;
        Cell::backward(vsaved, h_prev, h_out, d_out, dc_out, vdgx, vdgh, dh_prev, dc_prev);
        for (int g = 0; g < G; ++g) {
          store(dgx + local * GH_ + g * H + j, vdgx[g], n);
          if (g >= kSplit) store(dgh + local * SH + (g - kSplit) * H + j, vdgh[g], n);
        }
        if (!projection_) store(dh + b * P + j, dh_prev, n);
        if constexpr (Cell::kHasCellState) {
          store(dc + b * H + j, dc_prev, n);
          if (projection_) store(um + local * H + j, Cell::unprojected_output(vsaved), n);
        }
      });
      // With the projection, all of dh_prev goes through W_hh.
      if (projection_) zero_row(dh + b * P, P);
    });
    if constexpr (Cell::kResetBefore) {
      // d(r * h_prev) = dn_pre W_hn; then r's gradient and r's share of dh_prev.
      products.reset_recurrent.multiply(dense<scalar_t>(dgx + slice_row * GH_ + 2 * H, GH_), 0.f,
                                        daux + b0 * H, H);
      for_each_row(b0, b1, H, [&](int64_t b) {
        const int64_t row = seq_.row(t, b), local = first_row + b;
        if (!active(t, b)) return;
        for_each_chunk<scalar_t>(H, [&](int64_t j, int64_t n) {
          const V r = load(sv + row * S * H + j, n);
          const V h_prev = load(h_prev_of(t, b, out, h0) + j, n);
          V dh_prev = load(dh + b * P + j, n);
          const V dr_pre = Cell::reset_backward(r, h_prev, load(daux + b * H + j, n), dh_prev);
          store(dh + b * P + j, dh_prev, n);
          store(dgx + local * GH_ + j, dr_pre, n);
          store(rh + local * H + j, r * h_prev, n);
        });
      });
    }
    // dh_prev += dG W_hh, the gates before the split from the input-side gradients.
    products.recurrent.multiply(dense<scalar_t>(dgx + slice_row * GH_, GH_), 1.f, dh + b0 * P, P);
    if (SH > 0) {
      products.split_recurrent.multiply(dense<scalar_t>(dgh + slice_row * SH, SH), 1.f, dh + b0 * P,
                                        P);
    }
  }

  // The state before step t of batch entry b: a row of the output, or of h0 at the first step.
  const scalar_t* h_prev_of(int64_t t, int64_t b, const scalar_t* out, const scalar_t* h0) const {
    return first_step(t, b) ? h0 + b * s_.P : out + seq_.row(reverse_ ? t + 1 : t - 1, b) * s_.P;
  }

  // C[M, N] = beta * C + the sum over the chunk's steps k in [k0, k1) of dG_k^T X_k: dG_k the B
  // rows of step k in a chunk buffer (dG_t: its transpose, [M, chunk rows]), X_k the rows of
  // step t0 + k + shift of x ([T*B, N] in the caller's layout). The rows of consecutive
  // time-major steps form one matrix, and one GEMM; batch-first steps take a GEMM each.
  void add_step_products(int64_t M, int64_t N, MatrixRef<scalar_t> dG_t, const scalar_t* x,
                         int64_t t0, int64_t shift, int64_t k0, int64_t k1, float beta,
                         acc_t* C) const {
    const int64_t B = s_.B;
    if (k1 <= k0) return;
    if (!seq_.batch_first) {
      gemm<scalar_t>(M, N, (k1 - k0) * B, from_column(dG_t, k0 * B),
                     dense(x + seq_.row(t0 + k0 + shift, 0) * N, N), beta, C, N);
      return;
    }
    for (int64_t k = k0; k < k1; ++k) {
      gemm<scalar_t>(M, N, B, from_column(dG_t, k * B),
                     dense(x + seq_.row(t0 + k + shift, 0) * N, seq_.batch_step() * N),
                     k == k0 ? beta : 1.f, C, N);
    }
  }

  // C[M, P] = beta * C + dG^T h_prev over the chunk's steps [t0, t0 + steps): from the chunk's
  // copy hp where there is one, else from the output rows of the neighbouring steps and from
  // h0 for the sequences' first step (the same step for every sequence here).
  void add_h_prev_products(int64_t M, MatrixRef<scalar_t> dG_t, int64_t t0, int64_t steps,
                           const scalar_t* out, const scalar_t* h0, const scalar_t* hp, float beta,
                           acc_t* C) const {
    const int64_t B = s_.B, P = s_.P;
    if (hp) {
      gemm<scalar_t>(M, P, steps * B, dG_t, dense(hp, P), beta, C, P);
      return;
    }
    int64_t k0 = 0, k1 = steps;
    int64_t first = -1;  // the chunk's step that starts from h0, if any
    if (!reverse_ && t0 == 0) first = k0++;
    if (reverse_ && t0 + steps == s_.T) first = --k1;
    if (first >= 0) {
      gemm<scalar_t>(M, P, B, from_column(dG_t, first * B), dense(h0, P), beta, C, P);
      beta = 1.f;
    }
    add_step_products(M, P, dG_t, out, t0, reverse_ ? 1 : -1, k0, k1, beta, C);
  }

  // Whether a step's rows are one GEMM operand where they lie: time-major, or batch-first
  // steps of kStepGemmRows rows or more.
  bool step_rows_together() const { return !seq_.batch_first || s_.B >= kStepGemmRows; }

  // Whether grad_input takes dgx W_ih straight from the GEMMs: where the compute type is the
  // storage type and step_rows_together(). Batch-first steps of fewer rows go through a
  // time-major buffer and a copy, which took a fifth less than a GEMM per step at B = 64.
  bool dx_in_place() const { return std::is_same_v<scalar_t, acc_t> && step_rows_together(); }

  // grad_input rows of steps [t0, t0 + steps) = dgx W_ih: straight into grad_input (a copy of
  // it less, and its fresh pages faulted in by every BLAS thread) where dx_in_place, as one
  // GEMM time-major and one per step batch-first; otherwise through `dx` [steps * B, I] in the
  // compute type, copied out in parallel.
  void input_gradient(const scalar_t* dgx, int64_t t0, int64_t steps, MatrixRef<scalar_t> w_ih,
                      acc_t* dx, Tensor& grad_input) const {
    const int64_t B = s_.B, I = s_.I, T = s_.T;
    scalar_t* gi = grad_input.data_ptr<scalar_t>();
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      if (dx_in_place()) {
        if (!seq_.batch_first) {
          gemm<scalar_t>(steps * B, I, GH_, dense(dgx, GH_), w_ih, 0.f, gi + t0 * B * I, I);
          return;
        }
        for (int64_t k = 0; k < steps; ++k) {
          gemm<scalar_t>(B, I, GH_, dense(dgx + k * B * GH_, GH_), w_ih, 0.f,
                         gi + seq_.row(t0 + k, 0) * I, T * I);
        }
        return;
      }
    }
    gemm<scalar_t>(steps * B, I, GH_, dense(dgx, GH_), w_ih, 0.f, dx, I);
    for_each_row(0, steps * B, I, [&](int64_t r) {
      const acc_t* src = dx + r * I;
      std::copy(src, src + I, gi + seq_.row(t0 + r / B, r % B) * I);
    }, kCopyWork);
  }

  // The input rows of steps [t0, t0 + steps) copied into `dst` as one time-major
  // [steps * B, I] matrix, with the steps past each sequence's end zeroed, so that whatever the
  // padding holds (NaN included) cannot reach d(weight_ih) through 0 * x.
  MatrixRef<scalar_t> chunk_input(const scalar_t* x, int64_t t0, int64_t steps,
                                  scalar_t* dst) const {
    const int64_t B = s_.B, I = s_.I;
    for_each_row(0, steps * B, I, [&](int64_t r) {
      const int64_t t = t0 + r / B, b = r % B;
      scalar_t* d = dst + r * I;
      if (!active(t, b)) {
        zero_row(d, I);
      } else {
        const scalar_t* src = x + seq_.row(t, b) * I;
        std::copy(src, src + I, d);
      }
    }, kCopyWork);
    return dense<scalar_t>(dst, I);
  }

  // grad_output with unit stride along its last dimension, so that its rows can be read in
  // place. A broadcast gradient (that of output.sum(), say) stays broadcast: only its distinct
  // values are materialised, not the whole sequence.
  static Tensor row_addressable(const Tensor& g) {
    if (g.stride(2) == 1 || g.size(2) == 1) return g;
    Tensor distinct = g;
    for (int64_t d = 0; d < 2; ++d) {
      if (g.stride(d) == 0) distinct = distinct.narrow(d, 0, 1);
    }
    return distinct.contiguous().expand(g.sizes());
  }

  StridedRows<scalar_t> strided_rows(const Tensor& g) const {
    if (!g.defined()) return {nullptr, 0, 0};
    const int64_t t_dim = seq_.batch_first ? 1 : 0;
    return {g.const_data_ptr<scalar_t>(), g.stride(t_dim), g.stride(1 - t_dim)};
  }

  // sums[j] += column j of a contiguous [rows, W] matrix, for j < W. Blocks of 8 vectors of
  // columns are summed down the rows in registers, in parallel (a bias gradient of a large
  // layer is a pass over megabytes); the columns past the last full block, row by row.
  static void add_column_sums(const scalar_t* m, int64_t rows, int64_t W, acc_t* sums) {
    constexpr int64_t kVecs = 8, kWidth = V::size(), kBlock = kVecs * kWidth;
    const int64_t blocks = W / kBlock;
    const int64_t grain = std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(rows * kBlock, 1));
    at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t block = b0; block < b1; ++block) {
        const int64_t c0 = block * kBlock;
        V acc[kVecs];
        for (int v = 0; v < kVecs; ++v) acc[v] = V(0);
        for (int64_t r = 0; r < rows; ++r) {
          const scalar_t* row = m + r * W + c0;
          for (int v = 0; v < kVecs; ++v) acc[v] = acc[v] + load(row + v * kWidth, kWidth);
        }
        for (int v = 0; v < kVecs; ++v) {
          acc_t* out = sums + c0 + v * kWidth;
          store(out, load(out, kWidth) + acc[v], kWidth);
        }
      }
    });
    const int64_t rest = blocks * kBlock;
    if (rest == W) return;
    for (int64_t r = 0; r < rows; ++r) {
      for_each_chunk<scalar_t>(W - rest, [&](int64_t j, int64_t n) {
        store(sums + rest + j, load(sums + rest + j, n) + load(m + r * W + rest + j, n), n);
      });
    }
  }

  static Tensor sums_tensor(const std::vector<acc_t>& sums, int64_t c0, int64_t W,
                            const at::TensorOptions& opts) {
    Tensor out = new_tensor({W}, opts);
    scalar_t* o = out.data_ptr<scalar_t>();
    for (int64_t j = 0; j < W; ++j) o[j] = static_cast<scalar_t>(sums[c0 + j]);
    return out;
  }

  bool active(int64_t t, int64_t b) const { return !lengths_ || t < lengths_[b]; }

  // The weights that every step multiplies: W_hh [G*H, P], and W_hr [P, H] if any.
  RecurrentWeights recurrent_weights() const {
    const int64_t elements = GH_ * s_.P + (projection_ ? s_.P * s_.H : 0);
    return {elements, elements * static_cast<int64_t>(weight_hh_.element_size())};
  }

  bool first_step(int64_t t, int64_t b) const {
    if (!reverse_) return t == 0;
    return t == (lengths_ ? lengths_[b] : s_.T) - 1;
  }

  // [input-side biases | recurrent-side biases], each [G*H], or nothing without biases.
  // b_hh of gates below kRecurrentBiasFrom is folded into the input side.
  std::vector<acc_t> split_biases(const optional<Tensor>& bias_ih,
                                  const optional<Tensor>& bias_hh) const {
    if (!bias_ih.has_value() && !bias_hh.has_value()) return {};
    std::vector<acc_t> out(2 * GH_, acc_t(0));
    const int64_t split = Cell::kRecurrentBiasFrom * s_.H;
    if (bias_ih.has_value()) {
      const Tensor b = bias_ih->contiguous();
      const scalar_t* p = b.const_data_ptr<scalar_t>();
      for (int64_t k = 0; k < GH_; ++k) out[k] = static_cast<acc_t>(p[k]);
    }
    if (bias_hh.has_value()) {
      const Tensor b = bias_hh->contiguous();
      const scalar_t* p = b.const_data_ptr<scalar_t>();
      for (int64_t k = 0; k < GH_; ++k) out[k < split ? k : GH_ + k] += static_cast<acc_t>(p[k]);
    }
    return out;
  }

  LayerSizes s_;
  Seq seq_;
  bool reverse_;
  int64_t GH_;
  Tensor weight_hh_;
  optional<Tensor> weight_hr_;
  Tensor lengths_storage_;
  bool projection_;
  const int64_t* lengths_ = nullptr;
};

template <class F>
decltype(auto) dispatch_dtype(const Tensor& t, F&& f) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return f(float{});
    case at::kDouble:
      return f(double{});
    case at::kBFloat16:
      return f(at::BFloat16{});
    case at::kHalf:
      return f(at::Half{});
    default:
      TORCH_CHECK_TYPE(false, "rnnfast: input must be float32, float64, bfloat16 or float16; got ",
                       t.scalar_type());
  }
}

std::tuple<Tensor, Tensor, Tensor, Tensor> recurrent_forward_cpu(
    const Tensor& input, const Tensor& weight_ih, const Tensor& weight_hh,
    const optional<Tensor>& bias_ih, const optional<Tensor>& bias_hh, const optional<Tensor>& hx,
    const optional<Tensor>& cx, const optional<Tensor>& weight_hr, const optional<Tensor>& lengths,
    c10::string_view cell, bool reverse, bool batch_first, bool need_saved) {
  const LayerSizes sizes = check_forward_args(input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx,
                                              weight_hr, lengths, std::string(cell), batch_first);
  if (sizes.B == 0) return empty_batch_forward(sizes, input, batch_first, need_saved);
  return dispatch_cell(sizes.kind, [&](auto cell_type) {
    using Cell = decltype(cell_type);
    return dispatch_dtype(input, [&](auto scalar) {
      using scalar_t = decltype(scalar);
      Recurrence<Cell, scalar_t> layer(sizes, reverse, batch_first, weight_hh, weight_hr, lengths);
      return layer.forward(input, weight_ih, bias_ih, bias_hh, hx, cx, need_saved);
    });
  });
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> recurrent_backward_cpu(
    const optional<Tensor>& grad_output, const optional<Tensor>& grad_h_n,
    const optional<Tensor>& grad_c_n, const Tensor& input, const Tensor& weight_ih,
    const Tensor& weight_hh, const optional<Tensor>& hx, const optional<Tensor>& weight_hr,
    const optional<Tensor>& lengths, const Tensor& output, const Tensor& saved,
    c10::string_view cell, bool reverse, bool batch_first, std::array<bool, 8> output_mask) {
  const LayerSizes sizes =
      check_backward_args(grad_output, grad_h_n, grad_c_n, input, weight_ih, weight_hh, hx,
                          weight_hr, lengths, output, saved, std::string(cell), batch_first);
  if (sizes.B == 0) {
    const auto g = empty_batch_backward(sizes, input, weight_hr.has_value(), output_mask);
    return {g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]};
  }
  const auto grads = dispatch_cell(sizes.kind, [&](auto cell_type) {
    using Cell = decltype(cell_type);
    return dispatch_dtype(input, [&](auto scalar) {
      using scalar_t = decltype(scalar);
      Recurrence<Cell, scalar_t> layer(sizes, reverse, batch_first, weight_hh, weight_hr, lengths);
      return layer.backward(grad_output, grad_h_n, grad_c_n, input, weight_ih, hx, output, saved,
                            output_mask);
    });
  });
  return {grads[0], grads[1], grads[2], grads[3], grads[4], grads[5], grads[6], grads[7]};
}

}  // namespace
}  // namespace rnnfast::cpu

TORCH_LIBRARY_IMPL(rnnfast, CPU, m) {
  m.impl("recurrent_forward", &rnnfast::cpu::recurrent_forward_cpu);
  m.impl("recurrent_backward", &rnnfast::cpu::recurrent_backward_cpu);
}
