// Scan programs by handle. rnnfast.scan registers each lowered loop once
// (rnnfast/_scan/engine.py) and passes its handle, a plain int, to the op rnnfast::scan_run.
// A registered program lives as long as the process: a graph may hold its handle after the
// traced step it came from is gone, and there is one per traced step and signature.
#pragma once

#include <cstdint>
#include <vector>

#include "scan_engine.h"

namespace rnnfast::scan {

// Decodes and checks the program (an error on malformed codes); returns its handle.
int64_t register_program(const std::vector<int64_t>& codes, std::vector<double> scalars);

// The engine of a registered program; a ValueError names an unknown handle.
const ScanEngine& registered_engine(int64_t handle);

}  // namespace rnnfast::scan
