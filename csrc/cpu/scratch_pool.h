// Scratch memory of the CPU engine (the chunk buffers of forward and backward, the panels of
// panel_gemm), reused from call to call instead of freshly allocated.
//
// Why: a fresh buffer of a MiB or so comes from the kernel as new pages where glibc's
// allocation history has put blocks of that size on mmap, a page fault for each 4 KiB page,
// in some processes and not in others.
#pragma once

#include <ATen/core/Tensor.h>

namespace rnnfast::cpu {

// An uninitialised tensor whose memory returns to a process-wide pool when its last
// reference goes, for a later call of a similar size. The pool keeps at most 64 MiB. Not for
// tensors handed to the caller: their storage would not be resizable. A request for zero
// elements gets a shared tensor of shape [0], whose data pointer is null.
at::Tensor scratch_empty(at::IntArrayRef sizes, at::ScalarType dtype);

// Byte offsets of consecutive sections of one scratch buffer, each on a 64-byte boundary (as
// the buffer itself is): a call's several buffers from one scratch_empty.
class ScratchLayout {
 public:
  // Adds a section of n elements of T; returns its offset.
  template <class T>
  int64_t add(int64_t n) {
    const int64_t offset = bytes_;
    bytes_ += (n * static_cast<int64_t>(sizeof(T)) + kAlignment - 1) / kAlignment * kAlignment;
    return offset;
  }
  int64_t bytes() const { return bytes_; }

 private:
  static constexpr int64_t kAlignment = 64;
  int64_t bytes_ = 0;
};

// The section at byte offset `at` (from ScratchLayout::add) of a buffer of layout.bytes().
template <class T>
T* section_of(const at::Tensor& scratch, int64_t at) {
  return reinterpret_cast<T*>(static_cast<char*>(scratch.data_ptr()) + at);
}

// Frees the pool's idle buffers (rnnfast.empty_cpu_cache()); returns the bytes freed.
int64_t release_idle_scratch();
// Bytes the pool holds idle.
int64_t idle_scratch_bytes();

}  // namespace rnnfast::cpu
