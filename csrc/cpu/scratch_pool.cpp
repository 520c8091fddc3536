#include "scratch_pool.h"

#include <ATen/ATen.h>
#include <c10/core/impl/alloc_cpu.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <mutex>
#include <vector>

namespace rnnfast::cpu {
namespace {

class ScratchPool {
 public:
  static ScratchPool& instance() {
    static auto* pool = new ScratchPool();  // never destroyed: a tensor may outlive statics
    return *pool;
  }

  // `bytes` of memory (64-byte aligned) and the capacity actually given.
  std::pair<void*, size_t> acquire(size_t bytes) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      // The smallest free buffer that fits and would not leave more than half of itself idle.
      auto best = free_.end();
      for (auto it = free_.begin(); it != free_.end(); ++it) {
        if (it->second >= bytes && it->second <= 2 * bytes &&
            (best == free_.end() || it->second < best->second)) {
          best = it;
        }
      }
      if (best != free_.end()) {
        const auto found = *best;
        free_.erase(best);
        cached_bytes_ -= found.second;
        return found;
      }
    }
    return {c10::alloc_cpu(bytes), bytes};
  }

  int64_t release_idle() {
    std::vector<std::pair<void*, size_t>> idle;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      idle.swap(free_);
      cached_bytes_ = 0;
    }
    int64_t bytes = 0;
    for (const auto& [data, capacity] : idle) {
      c10::free_cpu(data);
      bytes += static_cast<int64_t>(capacity);
    }
    return bytes;
  }

  int64_t idle_bytes() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return static_cast<int64_t>(cached_bytes_);
  }

  void release(void* data, size_t capacity) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (cached_bytes_ + capacity <= kCachedBytes) {
        free_.emplace_back(data, capacity);
        cached_bytes_ += capacity;
        return;
      }
    }
    c10::free_cpu(data);
  }

 private:
  static constexpr size_t kCachedBytes = size_t{64} << 20;

  std::mutex mutex_;
  std::vector<std::pair<void*, size_t>> free_;  // (data, capacity)
  size_t cached_bytes_ = 0;
};

}  // namespace

at::Tensor scratch_empty(at::IntArrayRef sizes, at::ScalarType dtype) {
  int64_t elements = 1;
  for (const int64_t size : sizes) elements *= size;
  if (elements == 0) {
    // The engine asks for buffers it does not need at zero size (a dozen per small layer's
    // forward+backward) and only takes their (null) data pointer: one shared empty tensor per
    // thread and dtype spares each a TensorImpl and a StorageImpl from malloc.
    thread_local std::array<at::Tensor, static_cast<size_t>(at::ScalarType::NumOptions)> empty;
    at::Tensor& shared = empty[static_cast<size_t>(dtype)];
    if (!shared.defined()) shared = at::empty({0}, at::TensorOptions().dtype(dtype));
    return shared;
  }
  const size_t bytes = elements * c10::elementSize(dtype);
  const auto [data, capacity] = ScratchPool::instance().acquire(bytes);
  return at::from_blob(
      data, sizes, [capacity = capacity](void* p) { ScratchPool::instance().release(p, capacity); },
      at::TensorOptions().dtype(dtype));
}

int64_t release_idle_scratch() { return ScratchPool::instance().release_idle(); }

int64_t idle_scratch_bytes() { return ScratchPool::instance().idle_bytes(); }

}  // namespace rnnfast::cpu
