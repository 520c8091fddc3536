#include "recurrence_on_host.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <utility>

#include "../recurrence_engine.h"
#include "../step_elements.h"

namespace rnnfast::cuda {

// The host's 16-bit types, rounded to nearest even on store as __float2half_rn and
// __float2bfloat16_rn do on the device.
template <>
struct Storage<c10::Half> {
  using Acc = float;
  static float load(c10::Half x) { return static_cast<float>(x); }
  static void store(c10::Half* p, float v) { *p = c10::Half(v); }
};

template <>
struct Storage<c10::BFloat16> {
  using Acc = float;
  static float load(c10::BFloat16 x) { return static_cast<float>(x); }
  static void store(c10::BFloat16* p, float v) { *p = c10::BFloat16(v); }
};

}  // namespace rnnfast::cuda

namespace rnnfast::cuda_on_host {
namespace {

using at::Tensor;
using cuda::ElementType;
using cuda::Operand;
using cuda::StepGeometry;

template <class F>
void dispatch_type(ElementType type, F&& f) {
  cuda::dispatch_element_type<c10::Half, c10::BFloat16>(type, std::forward<F>(f));
}

// The elements of one pass, one after another: what the kernels' threads do side by side.
template <class Element>
void for_each_element(int64_t n, Element&& element) {
  for (int64_t e = 0; e < n; ++e) element(e);
}

// A stored column-major matrix of rows x cols with leading dimension ld (element (i, j) at
// data[i + j * ld]) as a tensor over the same memory; ld checked as cuBLAS checks it.
Tensor column_major_matrix(const void* data, int64_t rows, int64_t cols, int64_t ld,
                           at::ScalarType type) {
  TORCH_CHECK(ld >= std::max<int64_t>(1, rows), "rnnfast (CUDA engine on the host): a GEMM ",
              "operand stored as ", rows, " x ", cols, " (column-major) has leading dimension ", ld,
              "; cuBLAS would refuse it");
  return at::from_blob(const_cast<void*>(data), {rows, cols}, {1, ld},
                       at::TensorOptions().dtype(type));
}

// The engine's Device on the CPU (see cuda/recurrence_engine.h).
class HostDevice {
 public:
  struct Guard {
    explicit Guard(at::Device device) {
      TORCH_CHECK(device.is_cpu(), "rnnfast: the CUDA engine on the host takes CPU tensors; got ",
                  device);
    }
  };

  // As cuda::Blas::gemm, through the same column-major call it makes to cuBLAS: the products
  // in the compute type (float, or double for double), rounded to c's type once.
  void gemm(at::ScalarType ab_type, at::ScalarType c_type, int64_t M, int64_t N, int64_t K,
            double alpha, Operand a, Operand b, double beta, void* c, int64_t ldc) const {
    if (M == 0 || N == 0) return;
    const cuda::ColumnMajorGemm g = cuda::column_major(M, N, K, a, b, ldc);
    const auto acc = ab_type == at::kDouble ? at::kDouble : at::kFloat;
    const Tensor first = g.trans_first
                             ? column_major_matrix(g.first, g.k, g.m, g.ld_first, ab_type).t()
                             : column_major_matrix(g.first, g.m, g.k, g.ld_first, ab_type);
    const Tensor second = g.trans_second
                              ? column_major_matrix(g.second, g.n, g.k, g.ld_second, ab_type).t()
                              : column_major_matrix(g.second, g.k, g.n, g.ld_second, ab_type);
    Tensor out = column_major_matrix(c, g.m, g.n, g.ldc, c_type);
    Tensor product = at::mm(first.to(acc), second.to(acc)).mul_(alpha);
    if (beta != 0) product.add_(out.to(acc), beta);  // as cuBLAS, c is not read when beta = 0
    out.copy_(product);
  }

  void forward_step(CellKind kind, ElementType type, const StepGeometry& geo, int64_t t,
                    const cuda::ForwardStep& args) const {
    each_cell_and_type(kind, type, [&](auto cell, auto tag) {
      using Cell = decltype(cell);
      using T = typename decltype(tag)::type;
      for_each_element(geo.B * geo.H,
                       [&](int64_t e) { cuda::forward_step_element<Cell, T>(geo, t, args, e); });
    });
  }

  void reset_forward(CellKind kind, ElementType type, const StepGeometry& geo, int64_t t,
                     const cuda::ForwardStep& args, void* reset_h) const {
    each_cell_and_type(kind, type, [&](auto cell, auto tag) {
      using Cell = decltype(cell);
      using T = typename decltype(tag)::type;
      if constexpr (Cell::kResetBefore) {
        for_each_element(geo.B * geo.H, [&](int64_t e) {
          cuda::reset_forward_element<Cell, T>(geo, t, args, static_cast<T*>(reset_h), e);
        });
      } else {
        TORCH_CHECK(false, "rnnfast: reset_forward is for the reset-before GRU only");
      }
    });
  }

  void store_projection(ElementType type, const StepGeometry& geo, int64_t t, const void* projected,
                        void* h, void* output) const {
    dispatch_type(type, [&](auto tag) {
      using T = typename decltype(tag)::type;
      using A = typename cuda::Storage<T>::Acc;
      for_each_element(geo.B * geo.P, [&](int64_t e) {
        cuda::store_projection_element<T>(geo, t, static_cast<const A*>(projected),
                                          static_cast<T*>(h), static_cast<T*>(output), e);
      });
    });
  }

  void projection_grad(ElementType type, const StepGeometry& geo, int64_t t,
                       const void* grad_output, void* dh, void* d_projected) const {
    dispatch_type(type, [&](auto tag) {
      using T = typename decltype(tag)::type;
      using A = typename cuda::Storage<T>::Acc;
      for_each_element(geo.B * geo.P, [&](int64_t e) {
        cuda::projection_grad_element<T>(geo, t, static_cast<const T*>(grad_output),
                                         static_cast<A*>(dh), static_cast<T*>(d_projected), e);
      });
    });
  }

  void backward_step(CellKind kind, ElementType type, const StepGeometry& geo, int64_t t,
                     const cuda::BackwardStep& args) const {
    each_cell_and_type(kind, type, [&](auto cell, auto tag) {
      using Cell = decltype(cell);
      using T = typename decltype(tag)::type;
      for_each_element(geo.B * geo.H,
                       [&](int64_t e) { cuda::backward_step_element<Cell, T>(geo, t, args, e); });
    });
  }

  void reset_backward(CellKind kind, ElementType type, const StepGeometry& geo, int64_t t,
                      const cuda::BackwardStep& args, const void* d_rh) const {
    each_cell_and_type(kind, type, [&](auto cell, auto tag) {
      using Cell = decltype(cell);
      using T = typename decltype(tag)::type;
      using A = typename cuda::Storage<T>::Acc;
      if constexpr (Cell::kResetBefore) {
        for_each_element(geo.B * geo.H, [&](int64_t e) {
          cuda::reset_backward_element<Cell, T>(geo, t, args, static_cast<const A*>(d_rh), e);
        });
      } else {
        TORCH_CHECK(false, "rnnfast: reset_backward is for the reset-before GRU only");
      }
    });
  }

 private:
  template <class F>
  static void each_cell_and_type(CellKind kind, ElementType type, F&& f) {
    dispatch_cell(kind, [&](auto cell) { dispatch_type(type, [&](auto tag) { f(cell, tag); }); });
  }
};

}  // namespace

std::tuple<Tensor, Tensor, Tensor, Tensor> recurrent_forward(
    const Tensor& input, const Tensor& weight_ih, const Tensor& weight_hh,
    const std::optional<Tensor>& bias_ih, const std::optional<Tensor>& bias_hh,
    const std::optional<Tensor>& hx, const std::optional<Tensor>& cx,
    const std::optional<Tensor>& weight_hr, const std::optional<Tensor>& lengths,
    const std::string& cell, bool reverse, bool batch_first, bool need_saved) {
  return cuda::device_recurrent_forward<HostDevice>(input, weight_ih, weight_hh, bias_ih, bias_hh,
                                                    hx, cx, weight_hr, lengths, cell, reverse,
                                                    batch_first, need_saved);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> recurrent_backward(
    const std::optional<Tensor>& grad_output, const std::optional<Tensor>& grad_h_n,
    const std::optional<Tensor>& grad_c_n, const Tensor& input, const Tensor& weight_ih,
    const Tensor& weight_hh, const std::optional<Tensor>& hx,
    const std::optional<Tensor>& weight_hr, const std::optional<Tensor>& lengths,
    const Tensor& output, const Tensor& saved, const std::string& cell, bool reverse,
    bool batch_first, std::array<bool, 8> output_mask) {
  return cuda::device_recurrent_backward<HostDevice>(
      grad_output, grad_h_n, grad_c_n, input, weight_ih, weight_hh, hx, weight_hr, lengths, output,
      saved, cell, reverse, batch_first, output_mask);
}

}  // namespace rnnfast::cuda_on_host
