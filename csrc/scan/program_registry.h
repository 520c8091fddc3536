// Scan programs by handle. rnnfast.scan registers each lowered loop once
// (rnnfast/_scan/engine.py), passes its handle, a plain int, to the op rnnfast::scan_run, and
// releases it when the traced step it came from is dropped from the cache. A run holds its
// engine, so a release during a run on another thread waits for the run to end; a handle is
// never reused, so a released one is an error, not another program.
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

// Drops the program (nothing if it is not registered).
void release_program(int64_t handle);

// How many programs are registered (for the tests).
int64_t registered_programs();

}  // namespace rnnfast::scan
