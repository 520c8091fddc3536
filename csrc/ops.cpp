// The op schemas. Backends register kernels with TORCH_LIBRARY_IMPL(rnnfast, <key>, m);
// autograd.cpp registers the Autograd kernel, rnnfast/_ops.py the fake kernels; the scan op's
// kernels are in scan/scan_ops.cpp, mm's in cpu/mm_cpu.cpp and dispatch/mm_dispatch.cpp.
#include <torch/library.h>

TORCH_LIBRARY(rnnfast, m) {
  // One layer in one direction. input [T, B, I] ([B, T, I] if batch_first); output in the
  // same layout with P features, h_n [B, P], c_n [B, H] (LSTM; else empty), saved: what
  // backward needs besides output ([.., .., S*H] in the input's layout; empty if S = 0 or
  // need_saved is false). The autograd kernel sets need_saved to whether backward can run.
  m.def(
      "recurrent_forward(Tensor input, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, "
      "Tensor? bias_hh, Tensor? hx, Tensor? cx, Tensor? weight_hr, Tensor? lengths, str cell, "
      "bool reverse, bool batch_first, bool need_saved=True) -> (Tensor output, Tensor h_n, "
      "Tensor c_n, Tensor saved)");
  // A stack of layers, torch.nn.RNN/GRU/LSTM's forward: recurrent_forward per layer and
  // direction (recurrent_layers.cpp). weights: (weight_ih, weight_hh, bias_ih, bias_hh,
  // weight_hr) per layer and direction, the reverse direction after the forward one; hx
  // [L*D, B, P], cx [L*D, B, H]; dropout applies between layers. output [T, B, D*P] (or
  // batch-first), h_n [L*D, B, P], c_n [L*D, B, H] (LSTM; else [L*D, 0]).
  m.def(
      "recurrent_layers(Tensor input, Tensor?[] weights, Tensor? hx, Tensor? cx, "
      "Tensor? lengths, str cell, bool bidirectional, bool batch_first, float dropout) -> "
      "(Tensor output, Tensor h_n, Tensor c_n)");
  // Gradients of (input, weight_ih, weight_hh, bias_ih, bias_hh, hx, cx, weight_hr); the
  // ones whose output_mask entry is false come back as empty tensors. A missing incoming
  // gradient (grad_output, grad_h_n, grad_c_n) counts as zero.
  m.def(
      "recurrent_backward(Tensor? grad_output, Tensor? grad_h_n, Tensor? grad_c_n, Tensor input, "
      "Tensor weight_ih, Tensor weight_hh, Tensor? hx, Tensor? weight_hr, Tensor? lengths, "
      "Tensor output, Tensor saved, str cell, bool reverse, bool batch_first, "
      "bool[8] output_mask) -> (Tensor grad_input, Tensor grad_weight_ih, "
      "Tensor grad_weight_hh, Tensor grad_bias_ih, Tensor grad_bias_hh, Tensor grad_hx, "
      "Tensor grad_cx, Tensor grad_weight_hr)");
  // rnnfast.scan's loop: the scan program registered as `program` (scan/program_registry.h)
  // over `steps` steps. carry [B, cols] per carry slot, seqs [steps, B, cols] per sequence
  // slot, the program's weights, mask bool [steps, B] or none (a row keeps its carry where it
  // is false). Returns the final carry, the boundary values [steps, B, cols], the carry before
  // each step (if keep_states; else none) and the program's accumulators: run with gradient
  // set, a backward program's carries are gradients and its accumulators the weights'.
  m.def(
      "scan_run(int program, Tensor[] carry, Tensor[] seqs, Tensor[] weights, Tensor? mask, "
      "SymInt steps, bool reverse, bool keep_states, bool gradient) -> (Tensor[] final_carry, "
      "Tensor[] boundary, Tensor[] states, Tensor[] accumulators)");
  // self [M, K] @ mat2 [K, N] (+ bias, broadcastable to [M, N]) -> [M, N], as torch.addmm:
  // rnnfast.scan's products over all steps' rows at once (its hoisted and output parts). The
  // CPU kernel (cpu/mm_cpu.cpp) runs the engine's GEMM, which runs float32 on rnnfast's panels
  // where they beat the BLAS; other backends run ATen's (dispatch/mm_dispatch.cpp).
  m.def("mm(Tensor self, Tensor mat2, Tensor? bias=None) -> Tensor");
}
