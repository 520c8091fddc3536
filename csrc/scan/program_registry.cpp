#include "program_registry.h"

#include <c10/util/Exception.h>

#include <mutex>
#include <unordered_map>

namespace rnnfast::scan {
namespace {

struct Registry {
  std::mutex mutex;
  int64_t next_handle = 0;
  std::unordered_map<int64_t, std::shared_ptr<const ScanEngine>> engines;
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
  r.engines.emplace(handle, std::move(engine));
  return handle;
}

std::shared_ptr<const ScanEngine> registered_engine(int64_t handle) {
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  const auto found = r.engines.find(handle);
  TORCH_CHECK_VALUE(found != r.engines.end(), "rnnfast::scan_run: program ", handle,
                    " is not a registered scan program (released, or never registered)");
  return found->second;
}

void release_program(int64_t handle) {
  std::shared_ptr<const ScanEngine> released;  // destroyed after the lock is let go
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  const auto found = r.engines.find(handle);
  if (found == r.engines.end()) return;
  released = std::move(found->second);
  r.engines.erase(found);
}

int64_t registered_programs() {
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  return static_cast<int64_t>(r.engines.size());
}

}  // namespace rnnfast::scan
