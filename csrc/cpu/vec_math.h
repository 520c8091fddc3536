// Math<V> for the CPU's SIMD vectors, so the cells of cells.h run vectorised on the host,
// plus loads and stores that widen bfloat16 storage to float vectors.
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

  // tanh through one fast exp, tanh|x| = (1 - e) / (1 + e) with e = exp(-2|x|) in (0, 1], and
  // an odd Taylor polynomial for |x| < 1/4, where 1 - e loses bits (up to 14 ulp past 1/16,
  // 4.5 past 1/4): within 5 ulp everywhere (tests/test_pointwise_math.py), at a fraction of
  // the cost of Sleef's tanh (the dominant pointwise cost of small layers). The sign is x's
  // sign bit put back on tanh|x|. NaN stays NaN: exp_u20 clamps it to its overflow bound, so
  // e = inf and (1 - e) / (1 + e) is NaN.
  static V fast_tanh(V x) {
    const V ax = x.abs();
    const V e = (ax * V(-2)).exp_u20();
    const V large = (V(1) - e) / (V(1) + e);
    const V x2 = ax * ax;
    V series = V(62.0 / 2835);  // tanh x = x - x^3/3 + 2x^5/15 - 17x^7/315 + 62x^9/2835 - ...
    series = at::vec::fmadd(series, x2, V(-17.0 / 315));
    series = at::vec::fmadd(series, x2, V(2.0 / 15));
    series = at::vec::fmadd(series, x2, V(-1.0 / 3));
    const V small = at::vec::fmadd(ax * x2, series, ax);
    return V::blendv(large, small, ax < V(0.25)) | (x & V(-0.f));
  }
};

namespace cpu {

// Vectors of the compute type (float for bfloat16 storage, else the storage type).
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

// Calls f(j, n) for consecutive chunks [j, j + n) of [0, H), n at most one vector.
template <class scalar_t, class F>
inline void for_each_chunk(int64_t H, F&& f) {
  constexpr int64_t width = VecOf<scalar_t>::size();
  int64_t j = 0;
  for (; j + width <= H; j += width) f(j, width);
  if (j < H) f(j, H - j);
}

}  // namespace cpu
}  // namespace rnnfast
