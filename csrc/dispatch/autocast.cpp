// Autocast for the forward op. Like torch.nn's recurrent layers under autocast (mkldnn_rnn_layer
// on the CPU, cuDNN on CUDA), a layer runs in autocast's lower-precision dtype: its floating
// inputs, weights and states are cast (through autocast's weight cache), lengths are left
// alone. float64 tensors are not cast, as for every ATen op under autocast.
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include "../op_handles.h"

namespace rnnfast {
namespace {

using at::Tensor;
using std::optional;

template <c10::DeviceType device_type>
std::tuple<Tensor, Tensor, Tensor, Tensor> recurrent_forward_autocast(
    const Tensor& input, const Tensor& weight_ih, const Tensor& weight_hh,
    const optional<Tensor>& bias_ih, const optional<Tensor>& bias_hh, const optional<Tensor>& hx,
    const optional<Tensor>& cx, const optional<Tensor>& weight_hr, const optional<Tensor>& lengths,
    c10::string_view cell, bool reverse, bool batch_first, bool need_saved) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(
      at::autocast::get_autocast_dispatch_key_from_device_type(device_type));
  const at::ScalarType dtype = at::autocast::get_lower_precision_fp_from_device_type(device_type);
  const auto cast = [&](const auto& t) { return at::autocast::cached_cast(dtype, t, device_type); };
  return forward_op().call(cast(input), cast(weight_ih), cast(weight_hh), cast(bias_ih),
                           cast(bias_hh), cast(hx), cast(cx), cast(weight_hr), lengths, cell,
                           reverse, batch_first, need_saved);
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnfast, AutocastCPU, m) {
  m.impl("recurrent_forward", &recurrent_forward_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(rnnfast, AutocastCUDA, m) {
  m.impl("recurrent_forward", &recurrent_forward_autocast<c10::DeviceType::CUDA>);
}

}  // namespace rnnfast
