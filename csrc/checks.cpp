#include "checks.h"

#include <ATen/ATen.h>
#include <ATen/ExpandUtils.h>
#include <ATen/functorch/BatchedTensorImpl.h>
#include <c10/util/Exception.h>

#include <array>
#include <sstream>

namespace rnnfast {

namespace {

std::string shape_of(const at::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

void check_same_dtype_and_device(const at::Tensor& input, const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == input.scalar_type(), "rnnfast: ", name,
                   " must have the dtype of input (", input.scalar_type(), "); got ",
                   t.scalar_type());
  TORCH_CHECK(t.device() == input.device(), "rnnfast: ", name, " must be on the device of input (",
              input.device(), "); got ", t.device());
}

void check_shape(const at::Tensor& t, const char* name, at::IntArrayRef expected,
                 const char* meaning) {
  TORCH_CHECK_VALUE(t.sizes() == expected, "rnnfast: ", name, " must have shape ", expected, " (",
                    meaning, "); got ", shape_of(t));
}

void check_lengths(const at::Tensor& lengths, const at::Tensor& input, int64_t T, int64_t B) {
  TORCH_CHECK_TYPE(!at::isFloatingType(lengths.scalar_type()) &&
                       !at::isComplexType(lengths.scalar_type()) &&
                       lengths.scalar_type() != at::kBool,
                   "rnnfast: lengths must be an integer tensor; got ", lengths.scalar_type());
  TORCH_CHECK_VALUE(lengths.dim() == 1 && lengths.size(0) == B,
                    "rnnfast: lengths must be a 1-D tensor of batch size ", B,
                    " (one length per sequence); got shape ", shape_of(lengths));
  TORCH_CHECK(lengths.device().is_cpu() || lengths.device() == input.device(),
              "rnnfast: lengths must be on the CPU or on the device of input (", input.device(),
              "); got ", lengths.device());
  // Under vmap the values lie in the batched tensor's own storage. Under torch.func.grad they
  // are wrapped in a way C++ extensions cannot unwrap: rnnfast.functional checks those.
  at::Tensor values = lengths;
  while (const auto* batched = at::functorch::maybeGetBatchedImpl(values)) {
    values = batched->value();
  }
  if (lengths.device().is_cpu() && B > 0 &&
      !values.key_set().has(c10::DispatchKey::FuncTorchGradWrapper)) {
    const auto bounds = at::aminmax(values);
    const int64_t lo = std::get<0>(bounds).item<int64_t>();
    const int64_t hi = std::get<1>(bounds).item<int64_t>();
    TORCH_CHECK_VALUE(lo >= 0 && hi <= T, "rnnfast: lengths must lie in [0, T] = [0, ", T,
                      "] (T: the number of time steps of input); got values from ", lo, " to ", hi);
  }
}

}  // namespace

LayerSizes check_forward_args(const at::Tensor& input, const at::Tensor& weight_ih,
                              const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih,
                              const std::optional<at::Tensor>& bias_hh,
                              const std::optional<at::Tensor>& hx,
                              const std::optional<at::Tensor>& cx,
                              const std::optional<at::Tensor>& weight_hr,
                              const std::optional<at::Tensor>& lengths, const std::string& cell,
                              bool batch_first) {
  LayerSizes s{};
  s.kind = parse_cell(cell);
  const CellSpec& spec = cell_spec(s.kind);
  s.G = spec.gates;

  const char* layout = batch_first ? "[B, T, input_size] (batch_first=True)" : "[T, B, input_size]";
  TORCH_CHECK_VALUE(input.dim() == 3, "rnnfast: input must be a 3-D tensor ", layout, "; got a ",
                    input.dim(), "-D tensor of shape ", shape_of(input));
  TORCH_CHECK_TYPE(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble ||
                       input.scalar_type() == at::kBFloat16 || input.scalar_type() == at::kHalf,
                   "rnnfast: input must be float32, float64, bfloat16 or float16; got ",
                   input.scalar_type(), " on ", input.device());
  s.T = input.size(batch_first ? 1 : 0);
  s.B = input.size(batch_first ? 0 : 1);
  s.I = input.size(2);
  // torch.nn's exception type and words, so that code catching torch.nn's error catches this.
  TORCH_CHECK(s.T > 0,
              "rnnfast: Expected sequence length to be larger than 0 in RNN: input must hold at "
              "least one time step; got an empty sequence, input of shape ",
              shape_of(input), " ", layout);
  TORCH_CHECK_VALUE(s.I > 0, "rnnfast: input must have input_size > 0; got shape ",
                    shape_of(input));

  TORCH_CHECK_VALUE(weight_ih.dim() == 2 && weight_ih.size(0) > 0 && weight_ih.size(0) % s.G == 0,
                    "rnnfast: weight_ih must be a 2-D tensor [", s.G,
                    "*hidden_size, input_size] with hidden_size > 0 for cell '", cell,
                    "'; got shape ", shape_of(weight_ih));
  check_same_dtype_and_device(input, weight_ih, "weight_ih");
  s.H = weight_ih.size(0) / s.G;
  TORCH_CHECK_VALUE(weight_ih.size(1) == s.I, "rnnfast: weight_ih must have shape [",
                    weight_ih.size(0), ", ", s.I,
                    "] (its second size is the input size, the last size of input); got ",
                    shape_of(weight_ih));

  s.P = s.H;
  if (weight_hr.has_value()) {
    TORCH_CHECK_VALUE(spec.has_cell_state,
                      "rnnfast: weight_hr (the output projection) is "
                      "only defined for the LSTM; got it for cell '",
                      cell, "'");
    check_same_dtype_and_device(input, *weight_hr, "weight_hr");
    TORCH_CHECK_VALUE(weight_hr->dim() == 2 && weight_hr->size(1) == s.H && weight_hr->size(0) > 0,
                      "rnnfast: weight_hr must have shape [proj_size, hidden_size] = [P, ", s.H,
                      "] with P > 0; got ", shape_of(*weight_hr));
    s.P = weight_hr->size(0);
  }

  check_same_dtype_and_device(input, weight_hh, "weight_hh");
  check_shape(weight_hh, "weight_hh", {s.G * s.H, s.P},
              s.P == s.H ? "[gates*hidden_size, hidden_size]" : "[4*hidden_size, proj_size]");
  if (bias_ih.has_value()) {
    check_same_dtype_and_device(input, *bias_ih, "bias_ih");
    check_shape(*bias_ih, "bias_ih", {s.G * s.H}, "[gates*hidden_size]");
  }
  if (bias_hh.has_value()) {
    check_same_dtype_and_device(input, *bias_hh, "bias_hh");
    check_shape(*bias_hh, "bias_hh", {s.G * s.H}, "[gates*hidden_size]");
  }
  if (hx.has_value()) {
    check_same_dtype_and_device(input, *hx, "hx");
    check_shape(*hx, "hx", {s.B, s.P}, s.P == s.H ? "[batch, hidden_size]" : "[batch, proj_size]");
  }
  if (cx.has_value()) {
    TORCH_CHECK_VALUE(spec.has_cell_state,
                      "rnnfast: cx (the initial cell state) is only "
                      "defined for the LSTM; got it for cell '",
                      cell, "'");
    check_same_dtype_and_device(input, *cx, "cx");
    check_shape(*cx, "cx", {s.B, s.H}, "[batch, hidden_size]");
  }
  if (lengths.has_value()) check_lengths(*lengths, input, s.T, s.B);
  return s;
}

LayerSizes check_backward_args(const std::optional<at::Tensor>& grad_output,
                               const std::optional<at::Tensor>& grad_h_n,
                               const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input,
                               const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                               const std::optional<at::Tensor>& hx,
                               const std::optional<at::Tensor>& weight_hr,
                               const std::optional<at::Tensor>& lengths, const at::Tensor& output,
                               const at::Tensor& saved, const std::string& cell, bool batch_first) {
  const LayerSizes s = check_forward_args(input, weight_ih, weight_hh, std::nullopt, std::nullopt,
                                          hx, std::nullopt, weight_hr, lengths, cell, batch_first);
  const CellSpec& spec = cell_spec(s.kind);
  // The kernels read output and saved as the input's element type.
  check_same_dtype_and_device(input, output, "output");
  check_shape(output, "output", sequence_shape(s, s.P, batch_first), "the forward's output");
  if (grad_output.has_value()) {
    check_shape(*grad_output, "grad_output", sequence_shape(s, s.P, batch_first),
                "the shape of output");
    check_same_dtype_and_device(output, *grad_output, "grad_output");
  }
  if (grad_h_n.has_value()) {
    check_shape(*grad_h_n, "grad_h_n", {s.B, s.P}, "the shape of h_n");
    check_same_dtype_and_device(output, *grad_h_n, "grad_h_n");
  }
  if (grad_c_n.has_value()) {
    TORCH_CHECK_VALUE(spec.has_cell_state, "rnnfast: grad_c_n is only defined for the LSTM");
    check_shape(*grad_c_n, "grad_c_n", {s.B, s.H}, "the shape of c_n");
    check_same_dtype_and_device(output, *grad_c_n, "grad_c_n");
  }
  if (spec.saved > 0) {
    check_same_dtype_and_device(input, saved, "saved");
    check_shape(saved, "saved", sequence_shape(s, spec.saved * s.H, batch_first),
                "what the forward saved");
  }
  return s;
}

void check_mm_args(const at::Tensor& self, const at::Tensor& mat2,
                   const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(self.dim() == 2, "rnnfast.mm: self must be a matrix; got shape ", shape_of(self));
  TORCH_CHECK(mat2.dim() == 2, "rnnfast.mm: mat2 must be a matrix; got shape ", shape_of(mat2));
  TORCH_CHECK(self.size(1) == mat2.size(0),
              "rnnfast.mm: self and mat2 shapes cannot be multiplied (", shape_of(self), " and ",
              shape_of(mat2), ")");
  TORCH_CHECK(mat2.scalar_type() == self.scalar_type(),
              "rnnfast.mm: mat2 must have the dtype of self (", self.scalar_type(), "); got ",
              mat2.scalar_type());
  TORCH_CHECK(mat2.device() == self.device(), "rnnfast.mm: mat2 must be on the device of self (",
              self.device(), "); got ", mat2.device());
  if (!bias.has_value()) return;
  TORCH_CHECK(bias->scalar_type() == self.scalar_type(),
              "rnnfast.mm: bias must have the dtype of self (", self.scalar_type(), "); got ",
              bias->scalar_type());
  TORCH_CHECK(bias->device() == self.device(), "rnnfast.mm: bias must be on the device of self (",
              self.device(), "); got ", bias->device());
  const std::array<int64_t, 2> out{self.size(0), mat2.size(1)};
  TORCH_CHECK(bias->dim() <= 2 && at::is_expandable_to(bias->sizes(), at::IntArrayRef(out)),
              "rnnfast.mm: bias must be broadcastable to the product's shape ",
              at::IntArrayRef(out), "; got ", shape_of(*bias));
}

}  // namespace rnnfast
