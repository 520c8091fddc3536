#include "program_registry.h"

#include <c10/util/Exception.h>

#include <deque>
#include <memory>
#include <mutex>

namespace rnnfast::scan {
namespace {

// A deque of pointers: an engine never moves, so a reference outlives the lock.
std::mutex registry_mutex;
std::deque<std::unique_ptr<const ScanEngine>>& engines() {
  static std::deque<std::unique_ptr<const ScanEngine>> registered;
  return registered;
}

}  // namespace

int64_t register_program(const std::vector<int64_t>& codes, std::vector<double> scalars) {
  auto engine = std::make_unique<const ScanEngine>(codes, std::move(scalars));
  const std::lock_guard<std::mutex> lock(registry_mutex);
  engines().push_back(std::move(engine));
  return static_cast<int64_t>(engines().size()) - 1;
}

const ScanEngine& registered_engine(int64_t handle) {
  const std::lock_guard<std::mutex> lock(registry_mutex);
  TORCH_CHECK_VALUE(handle >= 0 && handle < static_cast<int64_t>(engines().size()),
                    "rnnfast::scan_run: program ", handle, " is not a registered scan program (",
                    engines().size(), " are registered)");
  return *engines()[handle];
}

}  // namespace rnnfast::scan
