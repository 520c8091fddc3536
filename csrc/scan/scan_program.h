// The loop part of an rnnfast.scan step as a compact program: int64 codes and double scalars,
// built once per traced step by rnnfast/_scan/lower.py and decoded here once. The engine
// (scan_engine.h) runs it at every step without Python.
//
// Codes: a header [version, dtype (0 float32, 1 float64), n_slots, n_carry, n_seq, n_weight,
// n_carry_out, n_boundary, n_nodes, n_accumulators], then per slot its column count (-1 for a
// weight), then the slot ids of carry_in, seq_in (rows read at each step), weights, carry_out
// and boundary (values kept per step), then per accumulator its [rows, cols] (rows 0 for a
// vector), then per node [opcode, n_out, outs.., n_in, ins.., n_int, ints..]. An input operand
// is a slot id, or -(1 + k) for the immediate scalars[k]. Accumulators sum a weight's
// gradient over the steps (a backward program: rnnfast/_scan/lower_vjp.py).
// Every batch slot is [B, cols] row-major with a row stride (last-dim slices are views).
#pragma once

#include <cstdint>
#include <vector>

namespace rnnfast::scan {

enum class Op : int64_t {
  kMm = 0,            // (a [B, K], W [K, N])
  kAddmm = 1,         // (bias [N] or [B, N], a, W)
  kMmAccumulate = 2,  // (a, W): out += a W, into an out a product wrote earlier in the step
  kAdd = 10,
  kSub,
  kMul,
  kDiv,
  kMaximum,
  kMinimum,
  kGt = 16,  // comparisons: 1 where true, else 0 (a boolean value is 0/1 in the program's dtype)
  kLt,
  kGe,
  kLe,
  kNeg = 20,
  kReciprocal,
  kSigmoid,
  kTanh,
  kRelu,
  kExp,
  kExpm1,
  kLog,
  kLog1p,
  kAbs,
  kSqrt,
  kRsqrt,
  kLogSigmoid,
  kCopy,
  kEq = 34,
  kNe = 35,
  kTanhBackward = 36,
  kSigmoidBackward,         // (grad, y): ATen's formulas from the output y
  kWhere = 38,              // (condition, a, b): a where condition != 0, else b
  kMaskedFill = 39,         // (x, mask, value): value where mask != 0, else x
  kClamp = 40,              // (x, lo, hi)
  kPow = 41,                // (x, exponent)
  kSoftplus = 42,           // (x, beta, threshold)
  kThresholdBackward = 43,  // (grad, x, threshold): 0 where x <= threshold
  kHardtanhBackward = 44,   // (grad, x, lo, hi): 0 where x <= lo or x >= hi
  kLogicalAnd = 45,         // 1 where both are nonzero, else 0
  kLogicalOr = 46,
  kSign = 47,                // -1, 0 or 1 (0 for NaN)
  kSoftplusBackward = 48,    // (grad, x, beta, threshold)
  kLogSigmoidBackward = 49,  // (grad, x)
  kSplit = 50,               // (x) ints: each out's first column; outs are views
  kCat = 51,                 // (xs..) along the last dim
  kSliceBackward = 52,       // (grad) ints [first]: grad in columns [first, first + cols), else 0
  kErf = 53,                 // pointwise again: 53 up to kRowSum
  kSin,
  kCos,
  kFloor,  // floor, ceil, round (half to even), trunc: their gradient is 0
  kCeil,
  kRound,
  kTrunc,
  kRowSum = 60,
  kRowMean,
  kLayerNorm,               // layer norm: (x, w or none, b or none, eps)
  kLayerNormBackward = 63,  // (grad, x, mean, rstd, w or none) -> (grad x, grad * x_hat)
  kRowMax = 64,             // ATen's amax over the last dim: NaN where a row has one
  kRowCumsum = 65,          // ATen's cumsum along the last dim (float summed in double)
  kRowFlip = 66,            // the columns of each row in reverse order (cumsum's gradient)
  kAccumulateProduct = 70,  // (a [B, K], g [B, N]) ints [acc, transposed]: acc += a^T g (or g^T a)
  kAccumulateColumnSum = 71,  // (g [B, N]) ints [acc]: acc[N] += sum over rows of g
  kExp2 = 72,                 // pointwise again: kExp2 up to kDivFloor
  kLog2,
  kLog10,
  kAtan,
  kSinh,
  kCosh,
  kTan,
  kAsin,
  kAcos,
  kFmod,       // (a, b): ATen's fmod, the remainder of a / b truncated (sign of a)
  kRemainder,  // (a, b): ATen's remainder, the remainder of a / b floored (sign of b)
  kDivTrunc,   // (a, b): ATen's div(rounding_mode="trunc")
  kDivFloor,   // (a, b): ATen's div(rounding_mode="floor"), exact where a / b rounds
};

constexpr int64_t kNoOperand = INT64_MIN;  // an absent optional operand (layer norm's w, b)

struct Node {
  Op op;
  std::vector<int64_t> outs, ins, ints;
};

struct Program {
  int dtype = 0;              // 0 float32, 1 float64
  std::vector<int64_t> cols;  // per slot: columns of a batch slot, -1 for a weight
  std::vector<int64_t> carry_in, seq_in, weights, carry_out, boundary;
  std::vector<std::vector<int64_t>> accumulators;  // per accumulator its shape
  std::vector<Node> nodes;
  std::vector<double> scalars;
  // Per boundary value: whether the step writes it straight into the boundary's rows (one
  // node writes it, not as a view, and others at most add to it; no earlier boundary entry
  // names it), with no copy.
  std::vector<bool> boundary_in_place;
};

// Decodes and checks codes (clear errors on malformed input: the format is internal).
Program decode_program(const std::vector<int64_t>& codes, std::vector<double> scalars);

}  // namespace rnnfast::scan
