#include "lengths_on_device.h"

#include <ATen/ATen.h>

#ifdef RNNFAST_WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace rnnfast {

at::Tensor lengths_on_device(const at::Tensor& lengths, const at::Device& device) {
  if (lengths.device() == device) return lengths;
  // Only from the CPU: a copy from any other device (meta included) would hide a mistake.
  TORCH_CHECK(lengths.device().is_cpu(),
              "rnnfast: lengths must be on the CPU or on the device of input (", device, "); got ",
              lengths.device());
#ifdef RNNFAST_WITH_CUDA
  if (device.is_cuda()) {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    C10_CUDA_CHECK(cudaStreamIsCapturing(c10::cuda::getCurrentCUDAStream(device.index()), &status));
    TORCH_CHECK(status == cudaStreamCaptureStatusNone, "rnnfast: lengths on the ", lengths.device(),
                " cannot be copied to ", device,
                " while its current stream is being captured into a CUDA graph; to capture a "
                "layer, pass lengths on the device of input (lengths.to(input.device()))");
  }
#endif
  const at::Tensor source = lengths.is_pinned() ? lengths.to(lengths.options().pinned_memory(false),
                                                             /*non_blocking=*/false,
                                                             /*copy=*/true)
                                                : lengths;
  // Non-blocking: from pageable memory the driver stages the copy before it returns.
  return source.to(device, /*non_blocking=*/true);
}

}  // namespace rnnfast
