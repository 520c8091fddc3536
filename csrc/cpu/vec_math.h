// Math<V> for the CPU's SIMD vectors, so the cells of cells.h run vectorised on the host,
// plus loads and stores that widen bfloat16 and float16 storage to float vectors.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include "../cells.h"

namespace rnnfast {

template <class T>
struct Math<at::vec::Vectorized<T>> {
  using V = at::vec::Vectorized<T>;
  static V tanh(V x) {
    if constexpr (std::is_same_v<T, float>) {
      return fast_tanh(x);
    } else {
      return x.tanh();
    }
  }
  // exp_u20 clamps its argument, which turns NaN into a number: put NaN back.
  static V sigmoid(V x) { return keep_nan(V(1) / (V(1) + (V(0) - x).exp_u20()), x); }
  static V relu(V x) { return at::vec::clamp_min(x, V(0)); }
  static V positive(V y) { return V::blendv(V(0), V(1), y > V(0)); }

  // y, or x where x is NaN.
  static V keep_nan(V y, V x) {
#if defined(CPU_CAPABILITY_AVX512)
    if constexpr (std::is_same_v<T, float>) {
      return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
    }
#endif
    return V::blendv(y, x, x.isnan());
  }

  // tanh x = x P(x^2) / Q(x^2), a rational fit of degree 4 over 4 in x^2 on [-9, 9] (relative
  // error 2e-8; past 9, tanh rounds to +-1 in float): eight FMAs and a division, half the time
  // of the exp-based form (1 - e) / (1 + e), e = exp(-2|x|), used before (S, without grad: RNN
  // 8 %, LSTM 10 % faster). Evaluated in float it is within 5.7 ulp of tanh: every float up to
  // 9.5 was checked, 0.08 ulp on average, 1745 of 1.1e9 over 4 ulp, the worst near tanh = 1
  // where each rounding of P and Q costs up to an ulp of the result. Tiny and denormal x come
  // out as x; NaN is put back after the clamp, which drops it.
  static V fast_tanh(V x) {
    const V clamped = at::vec::clamp(x, V(-9.f), V(9.f));
    const V s = clamped * clamped;
    V p = V(1.3353258054848993e-08f);
    p = at::vec::fmadd(p, s, V(2.0608098566299304e-05f));
    p = at::vec::fmadd(p, s, V(0.0034955302253365517f));
    p = at::vec::fmadd(p, s, V(0.13380977511405945f));
    p = at::vec::fmadd(p, s, V(1.f));
    V q = V(7.775991548442107e-07f);
    q = at::vec::fmadd(q, s, V(0.0003285538696218282f));
    q = at::vec::fmadd(q, s, V(0.025876764208078384f));
    q = at::vec::fmadd(q, s, V(0.4671429395675659f));
    q = at::vec::fmadd(q, s, V(1.f));
    return keep_nan(clamped * p / q, x);
  }
};

// Two vectors that the cells' math takes as one value. A cell's pointwise work on one vector
// is a long chain of dependent operations (a transcendental's is about 50 cycles); two chunks
// taken together interleave their chains, where one chunk after another left the core
// waiting on each (small layers, whose rows hold one or two vectors). In the forward's step
// loop at S without grad: GRU 4 %, RNN 2.5 %, LSTM 1.6 % faster; LM unchanged.
template <class T>
struct VecPair {
  using Half = at::vec::Vectorized<T>;
  Half lo, hi;
  VecPair() = default;
  VecPair(T value) : lo(value), hi(value) {}
  VecPair(Half lo_, Half hi_) : lo(lo_), hi(hi_) {}
};

template <class T>
inline VecPair<T> operator+(const VecPair<T>& a, const VecPair<T>& b) {
  return {a.lo + b.lo, a.hi + b.hi};
}
template <class T>
inline VecPair<T> operator-(const VecPair<T>& a, const VecPair<T>& b) {
  return {a.lo - b.lo, a.hi - b.hi};
}
template <class T>
inline VecPair<T> operator*(const VecPair<T>& a, const VecPair<T>& b) {
  return {a.lo * b.lo, a.hi * b.hi};
}

template <class T>
struct Math<VecPair<T>> {
  using P = VecPair<T>;
  using M = Math<at::vec::Vectorized<T>>;
  static P tanh(const P& x) { return {M::tanh(x.lo), M::tanh(x.hi)}; }
  static P sigmoid(const P& x) { return {M::sigmoid(x.lo), M::sigmoid(x.hi)}; }
  static P relu(const P& x) { return {M::relu(x.lo), M::relu(x.hi)}; }
};

namespace cpu {

// Vectors of the compute type (float for bfloat16 and float16 storage, else the storage type).
template <class scalar_t>
using VecOf = at::vec::Vectorized<at::opmath_type<scalar_t>>;

// Loads n <= VecOf::size() elements (the rest are zero); stores n elements.
template <class scalar_t>
inline VecOf<scalar_t> load(const scalar_t* p, int64_t n) {
  using V = VecOf<scalar_t>;
  if constexpr (std::is_same_v<scalar_t, at::opmath_type<scalar_t>>) {
    return n == V::size() ? V::loadu(p) : V::loadu(p, n);
  } else {
    at::opmath_type<scalar_t> wide[V::size()] = {};
    for (int64_t k = 0; k < n; ++k) wide[k] = static_cast<at::opmath_type<scalar_t>>(p[k]);
    return V::loadu(wide);
  }
}

template <class scalar_t>
inline void store(scalar_t* p, VecOf<scalar_t> v, int64_t n) {
  using V = VecOf<scalar_t>;
  if constexpr (std::is_same_v<scalar_t, at::opmath_type<scalar_t>>) {
    if (n == V::size()) {
      v.store(p);
    } else {
      v.store(p, n);
    }
  } else {
    at::opmath_type<scalar_t> wide[V::size()];
    v.store(wide);
    for (int64_t k = 0; k < n; ++k) p[k] = static_cast<scalar_t>(wide[k]);
  }
}

// Two vectors of the compute type, loaded from and stored to 2 * VecOf::size() elements.
template <class scalar_t>
using VecPairOf = VecPair<at::opmath_type<scalar_t>>;

template <class scalar_t>
inline VecPairOf<scalar_t> load_pair(const scalar_t* p) {
  constexpr int64_t w = VecOf<scalar_t>::size();
  return {load(p, w), load(p + w, w)};
}

template <class scalar_t>
inline void store(scalar_t* p, const VecPairOf<scalar_t>& v, int64_t /*n: 2 vectors*/) {
  constexpr int64_t w = VecOf<scalar_t>::size();
  store(p, v.lo, w);
  store(p + w, v.hi, w);
}

// Calls f(j, n) for consecutive chunks [j, j + n) of [0, H), n at most one vector.
// Both helpers are always inlined: GCC kept them out of line, called once per batch row, and
// the forward's step loop of a small RNN (B = 8, H = 32) ran 5 % slower so.
template <class scalar_t, class F>
[[gnu::always_inline]] inline void for_each_chunk(int64_t H, F&& f) {
  constexpr int64_t width = VecOf<scalar_t>::size();
  int64_t j = 0;
  for (; j + width <= H; j += width) f(j, width);
  if (j < H) f(j, H - j);
}

// Calls pair(j) for consecutive chunks [j, j + 2 vectors) of [0, H), then f(j, n) for the
// rest as for_each_chunk does.
template <class scalar_t, class Pair, class F>
[[gnu::always_inline]] inline void for_each_chunk_pair(int64_t H, Pair&& pair, F&& f) {
  constexpr int64_t width = 2 * VecOf<scalar_t>::size();
  int64_t j = 0;
  for (; j + width <= H; j += width) pair(j);
  for_each_chunk<scalar_t>(H - j, [&](int64_t k, int64_t n) { f(j + k, n); });
}

}  // namespace cpu
}  // namespace rnnfast
