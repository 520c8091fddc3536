// A libtorch program that uses rnnfast's ops through the dispatcher, as a C++ user would:
// the LSTM op against a step-by-step reference built from ATen ops, forward and backward.
#include <torch/torch.h>

#include <cstdio>

int main() {
  torch::manual_seed(0);
  const int64_t T = 7, B = 3, I = 5, H = 4;
  auto opts = torch::dtype(torch::kDouble);
  auto x = torch::randn({T, B, I}, opts).requires_grad_();
  auto w_ih = torch::randn({4 * H, I}, opts).requires_grad_();
  auto w_hh = torch::randn({4 * H, H}, opts).requires_grad_();
  auto b = torch::randn({4 * H}, opts);

  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("rnnfast::recurrent_forward", "")
                .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                    const at::Tensor&, const at::Tensor&, const at::Tensor&,
                    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                    c10::string_view, bool, bool, bool)>();
  auto [output, h_n, c_n, saved] =
      op.call(x, w_ih, w_hh, b, std::nullopt, std::nullopt, std::nullopt, std::nullopt,
              std::nullopt, "lstm", false, false, true);

  auto h = torch::zeros({B, H}, opts), c = torch::zeros({B, H}, opts);
  std::vector<at::Tensor> steps;
  for (int64_t t = 0; t < T; ++t) {
    auto gates = (torch::mm(x[t], w_ih.t()) + b + torch::mm(h, w_hh.t())).chunk(4, 1);
    c = torch::sigmoid(gates[1]) * c + torch::sigmoid(gates[0]) * torch::tanh(gates[2]);
    h = torch::sigmoid(gates[3]) * torch::tanh(c);
    steps.push_back(h);
  }
  auto reference = torch::stack(steps);

  const double forward_error = (output - reference).abs().max().item<double>();
  auto grads = torch::autograd::grad({(output * output).sum() + c_n.sum()}, {x, w_ih, w_hh});
  auto reference_grads =
      torch::autograd::grad({(reference * reference).sum() + c.sum()}, {x, w_ih, w_hh});
  double backward_error = 0;
  for (size_t k = 0; k < grads.size(); ++k) {
    backward_error =
        std::max(backward_error, (grads[k] - reference_grads[k]).abs().max().item<double>());
  }
  std::printf("rnnfast smoke: forward error %.3g, backward error %.3g\n", forward_error,
              backward_error);
  return (forward_error < 1e-12 && backward_error < 1e-12) ? 0 : 1;
}
