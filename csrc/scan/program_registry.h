// Scan programs by handle. rnnfast.scan registers each lowered loop once
// (rnnfast/_scan/engine.py), passes its handle, a plain int, to the op rnnfast::scan_run, and
// releases it when the traced step it came from is dropped from the cache. A handle stays valid
// while anything holds its engine: a run on another thread, or an autograd node whose backward
// is still to run it (differentiable_scan.h). A handle is never reused, so a released one is an
// error, not another program.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "scan_engine.h"

namespace rnnfast::scan {

// Decodes and checks the program (an error on malformed codes); returns its handle.
int64_t register_program(const std::vector<int64_t>& codes, std::vector<double> scalars);

// The engine of a registered program; a ValueError names an unknown or released handle.
std::shared_ptr<const ScanEngine> registered_engine(int64_t handle);

// Drops the registry's own hold on the program (nothing if it is not registered): its handle
// works until the last holder of its engine lets go.
void release_program(int64_t handle);

// How many programs can still be run by handle (for the tests).
int64_t registered_programs();

}  // namespace rnnfast::scan
