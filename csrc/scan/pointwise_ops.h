// The engine's pointwise opcodes as functions of SIMD vectors, with ATen's formulas (the
// Python runner's results, to rounding).
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/ArrayRef.h>

#include <limits>

#include "../cpu/vec_math.h"
#include "row_operand.h"
#include "scan_program.h"

namespace rnnfast::scan {

// Where fmod(a, b) is nonzero and of another sign than b: where ATen's remainder and floor
// division move the truncated result by one b.
template <class V>
V moves_to_floor(V mod, V b) {
  const V zero(0);
  return (mod != zero) & ((b < zero) ^ (mod < zero));
}

// ATen's floor division of floats: from a - fmod(a, b), which b divides exactly, so that
// a / b rounding up to an integer does not floor one too high; then rounded to the nearest
// integer, as that quotient is one up to rounding. 0 keeps the sign of a / b, and where a / b
// overflows (or b is 0) its value stands.
template <class V>
V div_floor(V a, V b) {
  const V zero(0), one(1), half(0.5);
  const V quotient = a / b;
  const V mod = a.fmod(b);
  const V inf(std::numeric_limits<typename V::value_type>::infinity());
  // Where a / b overflows and a is finite, ATen divides a itself.
  const V floored = V::blendv(a - mod, a, (quotient.abs() == inf) & (a.abs() != inf));
  V div = floored / b;
  div = V::blendv(div, div - one, moves_to_floor(mod, b));
  V result = div.floor();
  result = V::blendv(result, result + one, (div - result) > half);
  result = V::blendv(result, zero.copysign(quotient), div == zero);
  return V::blendv(result, quotient, b == zero);
}

// Runs a pointwise node; false where op is not pointwise. `in` holds its inputs (scalars as
// operands that are not per column).
template <class T>
bool run_pointwise(Op op, int64_t B, int64_t N, Rows<T> out, c10::ArrayRef<Operand<T>> in) {
  using V = at::vec::Vectorized<T>;
  using M = Math<V>;
  auto unary = [&](auto f) { map_rows<T>(B, N, out, f, in[0]); };
  auto binary = [&](auto f) { map_rows<T>(B, N, out, f, in[0], in[1]); };
  switch (op) {
    case Op::kAdd:
      binary([](V a, V b) { return a + b; });
      return true;
    case Op::kSub:
      binary([](V a, V b) { return a - b; });
      return true;
    case Op::kMul:
      binary([](V a, V b) { return a * b; });
      return true;
    case Op::kDiv:
      binary([](V a, V b) { return a / b; });
      return true;
    case Op::kMaximum:
      binary([](V a, V b) { return at::vec::maximum(a, b); });
      return true;
    case Op::kMinimum:
      binary([](V a, V b) { return at::vec::minimum(a, b); });
      return true;
    case Op::kGt:
      binary([](V a, V b) { return a.gt(b); });
      return true;
    case Op::kLt:
      binary([](V a, V b) { return a.lt(b); });
      return true;
    case Op::kGe:
      binary([](V a, V b) { return a.ge(b); });
      return true;
    case Op::kLe:
      binary([](V a, V b) { return a.le(b); });
      return true;
    case Op::kEq:
      binary([](V a, V b) { return a.eq(b); });
      return true;
    case Op::kNe:
      binary([](V a, V b) { return a.ne(b); });
      return true;
    case Op::kLogicalAnd:
      binary([](V a, V b) { return a.ne(V(0)) * b.ne(V(0)); });
      return true;
    case Op::kLogicalOr:
      binary([](V a, V b) { return at::vec::maximum(a.ne(V(0)), b.ne(V(0))); });
      return true;
    case Op::kWhere:
      map_rows<T>(
          B, N, out, [](V c, V a, V b) { return V::blendv(b, a, c != V(0)); }, in[0], in[1], in[2]);
      return true;
    case Op::kMaskedFill:
      map_rows<T>(
          B, N, out, [](V x, V mask, V value) { return V::blendv(x, value, mask != V(0)); }, in[0],
          in[1], in[2]);
      return true;
    case Op::kSign:  // (x > 0) - (x < 0): 0 for NaN, as ATen's sign and sgn
      unary([](V x) { return x.gt(V(0)) - x.lt(V(0)); });
      return true;
    case Op::kSoftplusBackward:  // g where beta x > threshold, else g * sigmoid(beta x)
      map_rows<T>(
          B, N, out,
          [](V g, V x, V beta, V threshold) {
            const V bx = x * beta;
            const V z = bx.exp();
            return V::blendv(g * z / (z + V(1)), g, bx > threshold);
          },
          in[0], in[1], in[2], in[3]);
      return true;
    case Op::kLogSigmoidBackward:  // g * (1 - sigmoid(x)), ATen's form from z = exp(-|x|)
      binary([](V g, V x) {
        const V z = x.abs().neg().exp();
        const V negative = x.lt(V(0));                    // 1 where x < 0
        const V sign = negative * V(2) - V(1);            // 1 where x < 0, else -1
        return g * (negative - sign * (z / (V(1) + z)));  // max_deriv - sign * z / (1 + z)
      });
      return true;
    case Op::kNeg:
      unary([](V x) { return x.neg(); });
      return true;
    case Op::kReciprocal:
      unary([](V x) { return x.reciprocal(); });
      return true;
    case Op::kSigmoid:
      unary([](V x) { return M::sigmoid(x); });
      return true;
    case Op::kTanh:
      unary([](V x) { return M::tanh(x); });
      return true;
    case Op::kRelu:
      unary([](V x) { return M::keep_nan(M::relu(x), x); });
      return true;
    case Op::kExp:
      unary([](V x) { return x.exp(); });
      return true;
    case Op::kExpm1:
      unary([](V x) { return x.expm1(); });
      return true;
    case Op::kLog:
      unary([](V x) { return x.log(); });
      return true;
    case Op::kLog1p:
      unary([](V x) { return x.log1p(); });
      return true;
    case Op::kAbs:
      unary([](V x) { return x.abs(); });
      return true;
    case Op::kSqrt:
      unary([](V x) { return x.sqrt(); });
      return true;
    case Op::kRsqrt:
      unary([](V x) { return x.rsqrt(); });
      return true;
    case Op::kErf:
      unary([](V x) { return x.erf(); });
      return true;
    case Op::kSin:
      unary([](V x) { return x.sin(); });
      return true;
    case Op::kCos:
      unary([](V x) { return x.cos(); });
      return true;
    case Op::kCopy:
      unary([](V x) { return x; });
      return true;
    case Op::kFmod:
      binary([](V a, V b) { return a.fmod(b); });
      return true;
    case Op::kRemainder:  // fmod, moved by b where it is nonzero and of another sign than b
      binary([](V a, V b) {
        const V mod = a.fmod(b);
        return V::blendv(mod, mod + b, moves_to_floor(mod, b));
      });
      return true;
    case Op::kDivTrunc:
      binary([](V a, V b) { return (a / b).trunc(); });
      return true;
    case Op::kDivFloor:
      binary([](V a, V b) { return div_floor(a, b); });
      return true;
    case Op::kFloor:
      unary([](V x) { return x.floor(); });
      return true;
    case Op::kCeil:
      unary([](V x) { return x.ceil(); });
      return true;
    case Op::kRound:
      unary([](V x) { return x.round(); });
      return true;
    case Op::kTrunc:
      unary([](V x) { return x.trunc(); });
      return true;
    case Op::kExp2:
      unary([](V x) { return x.exp2(); });
      return true;
    case Op::kLog2:
      unary([](V x) { return x.log2(); });
      return true;
    case Op::kLog10:
      unary([](V x) { return x.log10(); });
      return true;
    case Op::kAtan:
      unary([](V x) { return x.atan(); });
      return true;
    case Op::kSinh:
      unary([](V x) { return x.sinh(); });
      return true;
    case Op::kCosh:
      unary([](V x) { return x.cosh(); });
      return true;
    case Op::kTan:
      unary([](V x) { return x.tan(); });
      return true;
    case Op::kAsin:
      unary([](V x) { return x.asin(); });
      return true;
    case Op::kAcos:
      unary([](V x) { return x.acos(); });
      return true;
    case Op::kLogSigmoid:  // min(x, 0) - log1p(exp(-|x|))
      unary([](V x) { return at::vec::minimum(x, V(0)) - (x.abs().neg().exp()).log1p(); });
      return true;
    case Op::kClamp:
      map_rows<T>(
          B, N, out, [](V x, V lo, V hi) { return at::vec::minimum(at::vec::maximum(x, lo), hi); },
          in[0], in[1], in[2]);
      return true;
    case Op::kTanhBackward:
      binary([](V g, V y) { return g * (V(1) - y * y); });
      return true;
    case Op::kSigmoidBackward:
      binary([](V g, V y) { return g * (V(1) - y) * y; });
      return true;
    case Op::kThresholdBackward:
      map_rows<T>(
          B, N, out, [](V g, V x, V threshold) { return V::blendv(g, V(0), x <= threshold); },
          in[0], in[1], in[2]);
      return true;
    case Op::kHardtanhBackward:
      map_rows<T>(
          B, N, out, [](V g, V x, V lo, V hi) { return V::blendv(g, V(0), (x <= lo) | (x >= hi)); },
          in[0], in[1], in[2], in[3]);
      return true;
    case Op::kPow:
      binary([](V x, V e) { return x.pow(e); });
      return true;
    case Op::kSoftplus:  // x where beta x > threshold, else log1p(exp(beta x)) / beta
      map_rows<T>(
          B, N, out,
          [](V x, V beta, V threshold) {
            const V bx = x * beta;
            return V::blendv(bx.exp().log1p() / beta, x, bx > threshold);
          },
          in[0], in[1], in[2]);
      return true;
    default:
      return false;
  }
}

}  // namespace rnnfast::scan
