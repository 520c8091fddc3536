// Renamed cell_registry.h; kept for csrc/cpu/recurrence_cpu.cpp until its include follows.
#pragma once

#include "cell_registry.h"
