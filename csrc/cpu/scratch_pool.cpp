#include "scratch_pool.h"

#include <ATen/ATen.h>
#include <c10/core/impl/alloc_cpu.h>

#include <algorithm>
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
  const size_t bytes = std::max<size_t>(elements * c10::elementSize(dtype), 1);
  const auto [data, capacity] = ScratchPool::instance().acquire(bytes);
  return at::from_blob(
      data, sizes, [capacity = capacity](void* p) { ScratchPool::instance().release(p, capacity); },
      at::TensorOptions().dtype(dtype));
}

}  // namespace rnnfast::cpu
