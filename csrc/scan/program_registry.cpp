#include "program_registry.h"

#include <c10/util/Exception.h>

#include <mutex>
#include <unordered_map>

namespace rnnfast::scan {
namespace {

struct Registry {
  std::mutex mutex;
  int64_t next_handle = 0;
  // Every program whose engine is alive, by handle; the registry's own holds in `held`.
  std::unordered_map<int64_t, std::weak_ptr<const ScanEngine>> engines;
  std::unordered_map<int64_t, std::shared_ptr<const ScanEngine>> held;

  // Forgets the handles whose engines are gone (called with the mutex held).
  void sweep() {
    for (auto it = engines.begin(); it != engines.end();) {
      it = it->second.expired() ? engines.erase(it) : std::next(it);
    }
  }
};

Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace

int64_t register_program(const std::vector<int64_t>& codes, std::vector<double> scalars) {
  auto engine = std::make_shared<const ScanEngine>(codes, std::move(scalars));
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  const int64_t handle = r.next_handle++;
  r.engines.emplace(handle, engine);
  r.held.emplace(handle, std::move(engine));
  return handle;
}

std::shared_ptr<const ScanEngine> registered_engine(int64_t handle) {
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  const auto found = r.engines.find(handle);
  std::shared_ptr<const ScanEngine> engine =
      found != r.engines.end() ? found->second.lock() : nullptr;
  TORCH_CHECK_VALUE(engine != nullptr, "rnnfast::scan_run: program ", handle,
                    " is not a registered scan program (released, or never registered)");
  return engine;
}

void release_program(int64_t handle) {
  std::shared_ptr<const ScanEngine> released;  // destroyed after the lock is let go
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  const auto found = r.held.find(handle);
  if (found == r.held.end()) return;
  released = std::move(found->second);
  r.held.erase(found);
  if (released.use_count() == 1) r.engines.erase(handle);  // no other holder: gone now
  r.sweep();
}

int64_t registered_programs() {
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  r.sweep();
  return static_cast<int64_t>(r.engines.size());
}

}  // namespace rnnfast::scan
