// A libtorch program that uses rnnfast's ops through the dispatcher, as a C++ user would:
// the LSTM op against a step-by-step reference built from ATen ops, forward and backward, and
// the stack-of-layers op against two chained calls of the layer op.
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
  // Two layers through recurrent_layers: the second takes the first's output.
  auto w_ih2 = torch::randn({4 * H, H}, opts), w_hh2 = torch::randn({4 * H, H}, opts);
  auto layers_op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("rnnfast::recurrent_layers", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, const c10::List<std::optional<at::Tensor>>&,
              const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
              const std::optional<at::Tensor>&, c10::string_view, bool, bool, double)>();
  c10::List<std::optional<at::Tensor>> weights;
  for (const std::optional<at::Tensor>& w :
       {std::optional<at::Tensor>(w_ih), std::optional<at::Tensor>(w_hh),
        std::optional<at::Tensor>(b), std::optional<at::Tensor>(), std::optional<at::Tensor>(),
        std::optional<at::Tensor>(w_ih2), std::optional<at::Tensor>(w_hh2),
        std::optional<at::Tensor>(), std::optional<at::Tensor>(), std::optional<at::Tensor>()}) {
    weights.push_back(w);
  }
  auto [stack_output, stack_h, stack_c] = layers_op.call(x, weights, std::nullopt, std::nullopt,
                                                         std::nullopt, "lstm", false, false, 0.0);
  auto [second_output, second_h, second_c, second_saved] =
      op.call(output, w_ih2, w_hh2, std::nullopt, std::nullopt, std::nullopt, std::nullopt,
              std::nullopt, std::nullopt, "lstm", false, false, true);
  const double layers_error =
      std::max((stack_output - second_output).abs().max().item<double>(),
               (stack_h - torch::stack({h_n, second_h})).abs().max().item<double>());

  std::printf("rnnfast smoke: forward error %.3g, backward error %.3g, layers error %.3g\n",
              forward_error, backward_error, layers_error);
  return (forward_error < 1e-12 && backward_error < 1e-12 && layers_error == 0) ? 0 : 1;
}
