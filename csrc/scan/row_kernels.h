// The engine's per-row kernels: reductions over the last dimension, layer norm, and copies of
// rows (cat along the last dimension, carries, per-step outputs).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "row_operand.h"

namespace rnnfast::scan {

// out[b] = sum_j x(b, j), times `scale` (1 for sum, 1/N for mean); out is [B, 1].
template <class T>
void row_sum(int64_t B, int64_t N, Rows<const T> x, T scale, Rows<T> out) {
  for (int64_t b = 0; b < B; ++b) {
    const T* row = x.data + b * x.ld;
    T s = 0;
    for (int64_t j = 0; j < N; ++j) s += row[j];
    out.data[b * out.ld] = s * scale;
  }
}

// ATen's native_layer_norm over the last N columns: y = (x - mean) * rstd * w + b, with the
// biased variance; mean and rstd are [B, 1]. w and b may be null.
template <class T>
void layer_norm_rows(int64_t B, int64_t N, Rows<const T> x, const T* w, const T* bias, T eps,
                     Rows<T> y, Rows<T> mean, Rows<T> rstd) {
  for (int64_t b = 0; b < B; ++b) {
    const T* row = x.data + b * x.ld;
    T s = 0;
    for (int64_t j = 0; j < N; ++j) s += row[j];
    const T m = s / N;
    T v = 0;
    for (int64_t j = 0; j < N; ++j) v += (row[j] - m) * (row[j] - m);
    const T r = T(1) / std::sqrt(v / N + eps);
    T* out = y.data + b * y.ld;
    for (int64_t j = 0; j < N; ++j) {
      T z = (row[j] - m) * r;
      if (w != nullptr) z *= w[j];
      if (bias != nullptr) z += bias[j];
      out[j] = z;
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
  for (int64_t b = 0; b < B; ++b) {
    const T* gr = g.data + b * g.ld;
    const T* xr = x.data + b * x.ld;
    const T m = mean.data[b * mean.ld], r = rstd.data[b * rstd.ld];
    T ds = 0, db = 0;
    for (int64_t j = 0; j < N; ++j) {
      const T gw = w != nullptr ? gr[j] * w[j] : gr[j];
      ds += gw * xr[j];
      db += gw;
    }
    const T scale = T(1) / N;
    const T bb = (db * m - ds) * r * r * r * scale;
    const T c = -bb * m - db * r * scale;
    for (int64_t j = 0; j < N; ++j) {
      const T gw = w != nullptr ? gr[j] * w[j] : gr[j];
      dx.data[b * dx.ld + j] = r * gw + bb * xr[j] + c;
      g_xhat.data[b * g_xhat.ld + j] = gr[j] * (xr[j] - m) * r;
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
