// The engine's per-row kernels: reductions over the last dimension, layer norm, and copies of
// rows (cat along the last dimension, carries, per-step outputs).
#pragma once

#include <ATen/AccumulateType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../cpu/vec_math.h"
#include "row_operand.h"

namespace rnnfast::scan {

namespace row_detail {

template <class T>
using V = at::vec::Vectorized<T>;

// sum_j f(j) over [0, N), f giving a vector of columns j.. j + n (n = size, or the tail).
template <class T, class F>
T sum_columns(int64_t N, F f) {
  V<T> acc(0);
  int64_t j = 0;
  for (; j + V<T>::size() <= N; j += V<T>::size()) acc = acc + f(j, V<T>::size());
  if (j < N) acc = acc + f(j, N - j);  // the tail: f loads n elements, zeros beyond
  return at::vec::vec_reduce_all<T>([](V<T> a, V<T> b) { return a + b; }, acc);
}

using cpu::load;  // n <= V::size() elements, zeros beyond

}  // namespace row_detail

// out[b] = sum_j x(b, j), times `scale` (1 for sum, 1/N for mean); out is [B, 1].
template <class T>
void row_sum(int64_t B, int64_t N, Rows<const T> x, T scale, Rows<T> out) {
  using namespace row_detail;
  for (int64_t b = 0; b < B; ++b) {
    const T* row = x.data + b * x.ld;
    out.data[b * out.ld] =
        sum_columns<T>(N, [row](int64_t j, int64_t n) { return load(row + j, n); }) * scale;
  }
}

// out[b] = max_j x(b, j), NaN where the row has a NaN (ATen's amax); out is [B, 1], N > 0.
template <class T>
void row_max(int64_t B, int64_t N, Rows<const T> x, Rows<T> out) {
  using namespace row_detail;
  for (int64_t b = 0; b < B; ++b) {
    const T* row = x.data + b * x.ld;
    T m = row[0];
    int64_t j = 1;
    if (N >= V<T>::size()) {  // whole vectors; at::vec::maximum propagates NaN
      V<T> acc = V<T>::loadu(row);
      for (j = V<T>::size(); j + V<T>::size() <= N; j += V<T>::size()) {
        acc = at::vec::maximum(acc, V<T>::loadu(row + j));
      }
      m = at::vec::vec_reduce_all<T>([](V<T> p, V<T> q) { return at::vec::maximum(p, q); }, acc);
    }
    for (; j < N; ++j) m = std::isnan(m) || m >= row[j] ? m : row[j];  // row[j] NaN: taken
    out.data[b * out.ld] = m;
  }
}

// out[b, j] = sum_{k <= j} x(b, k), summed in order in ATen's CPU accumulation type (double
// for float), as its cumsum kernel, so that the results are ATen's bit for bit.
template <class T>
void row_cumsum(int64_t B, int64_t N, Rows<const T> x, Rows<T> out) {
  for (int64_t b = 0; b < B; ++b) {
    const T* row = x.data + b * x.ld;
    T* to = out.data + b * out.ld;
    at::acc_type<T, /*is_cuda=*/false> sum = 0;
    for (int64_t j = 0; j < N; ++j) {
      sum += row[j];
      to[j] = static_cast<T>(sum);
    }
  }
}

// out[b, j] = x(b, N - 1 - j).
template <class T>
void row_flip(int64_t B, int64_t N, Rows<const T> x, Rows<T> out) {
  for (int64_t b = 0; b < B; ++b) {
    const T* row = x.data + b * x.ld;
    std::reverse_copy(row, row + N, out.data + b * out.ld);
  }
}

// ATen's native_layer_norm over the last N columns: y = (x - mean) * rstd * w + b, with the
// biased variance; mean and rstd are [B, 1]. w and b may be null.
template <class T>
void layer_norm_rows(int64_t B, int64_t N, Rows<const T> x, const T* w, const T* bias, T eps,
                     Rows<T> y, Rows<T> mean, Rows<T> rstd) {
  using namespace row_detail;
  for (int64_t b = 0; b < B; ++b) {
    const T* row = x.data + b * x.ld;
    const T m = sum_columns<T>(N, [row](int64_t j, int64_t n) { return load(row + j, n); }) / N;
    const T v = sum_columns<T>(N, [row, m](int64_t j, int64_t n) {
      // the tail's zeros would add m^2 each: keep them zero
      const V<T> d = load(row + j, n) - V<T>(m);
      return n == V<T>::size() ? d * d : V<T>::set(V<T>(0), d * d, n);
    });
    const T r = T(1) / std::sqrt(v / N + eps);
    T* out = y.data + b * y.ld;
    for (int64_t j = 0; j < N; j += V<T>::size()) {
      const int64_t n = std::min<int64_t>(V<T>::size(), N - j);
      V<T> z = (load(row + j, n) - V<T>(m)) * V<T>(r);
      if (w != nullptr) z = z * load(w + j, n);
      if (bias != nullptr) z = z + load(bias + j, n);
      cpu::store(out + j, z, n);
    }
    mean.data[b * mean.ld] = m;
    rstd.data[b * rstd.ld] = r;
  }
}

// ATen's layer-norm backward over N columns (its CPU kernel's formula): dx = rstd w g +
// b x + c per row, and g * x_hat for the weight's gradient. w may be null.
template <class T>
void layer_norm_backward_rows(int64_t B, int64_t N, Rows<const T> g, Rows<const T> x,
                              Rows<const T> mean, Rows<const T> rstd, const T* w, Rows<T> dx,
                              Rows<T> g_xhat) {
  using namespace row_detail;
  for (int64_t b = 0; b < B; ++b) {
    const T* gr = g.data + b * g.ld;
    const T* xr = x.data + b * x.ld;
    const T m = mean.data[b * mean.ld], r = rstd.data[b * rstd.ld];
    const auto gw = [gr, w](int64_t j, int64_t n) {
      return w != nullptr ? load(gr + j, n) * load(w + j, n) : load(gr + j, n);
    };
    const T ds =
        sum_columns<T>(N, [&](int64_t j, int64_t n) { return gw(j, n) * load(xr + j, n); });
    const T db = sum_columns<T>(N, gw);
    const T scale = T(1) / N;
    const T bb = (db * m - ds) * r * r * r * scale;
    const T c = -bb * m - db * r * scale;
    for (int64_t j = 0; j < N; j += V<T>::size()) {
      const int64_t n = std::min<int64_t>(V<T>::size(), N - j);
      const V<T> xv = load(xr + j, n);
      cpu::store(dx.data + b * dx.ld + j, V<T>(r) * gw(j, n) + V<T>(bb) * xv + V<T>(c), n);
      cpu::store(g_xhat.data + b * g_xhat.ld + j, load(gr + j, n) * (xv - V<T>(m)) * V<T>(r), n);
    }
  }
}

// out[:, first:first + N] = x for B rows.
template <class T>
void copy_rows(int64_t B, int64_t N, Rows<const T> x, Rows<T> out, int64_t first = 0) {
  for (int64_t b = 0; b < B; ++b) {
    const T* from = x.data + b * x.ld;
    std::copy(from, from + N, out.data + b * out.ld + first);
  }
}

}  // namespace rnnfast::scan
