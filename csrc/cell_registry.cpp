#include "cell_registry.h"

#include <c10/util/Exception.h>

#include <sstream>

namespace rnnfast {

CellKind parse_cell(const std::string& name) {
  for (std::size_t k = 0; k < kCellCount; ++k) {
    if (name == kCellSpecs[k].name) return static_cast<CellKind>(k);
  }
  std::ostringstream known;
  for (const CellSpec& spec : kCellSpecs) known << " '" << spec.name << "'";
  TORCH_CHECK_VALUE(false, "rnnfast: cell must be one of", known.str(), "; got '", name, "'");
}

}  // namespace rnnfast
