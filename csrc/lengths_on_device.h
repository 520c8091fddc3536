// The lengths argument moved to the device the kernels run on.
#pragma once

#include <ATen/core/Tensor.h>

namespace rnnfast {

// lengths [B] on `device` (input's), for the kernels: from there or from the CPU (any other
// device is refused). A CPU source is taken as it is at the call: a pinned buffer would
// otherwise be read when the stream reaches the copy, after the caller may have refilled it.
// On a CUDA device, refused while the current stream is being captured into a CUDA graph,
// which cannot hold a copy from the host.
at::Tensor lengths_on_device(const at::Tensor& lengths, const at::Device& device);

}  // namespace rnnfast
