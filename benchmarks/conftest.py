"""pytest-benchmark configuration for rnnfast.

    pytest benchmarks                            # full: shapes S, LM, M, L (L is marked slow)
    pytest benchmarks --quick                    # or RNNFAST_BENCH_QUICK=1: shape S, 3 rounds
    pytest benchmarks --benchmark-disable        # each case once, as a smoke test
    pytest benchmarks -m "not slow"              # everything but L
    pytest benchmarks -m "not compile"           # without torch.compile's rows (minutes each)
    pytest benchmarks --bench-device cuda

Groups are "{cell}-{shape}-{pass}", so each table compares like with like; rnnfast.scan's
ratios to its baselines follow the tables (scan_summary.py).
"""

import os

import pytest
import torch
from scan_summary import pytest_terminal_summary, record_scan_median  # noqa: F401

from rnnfast.bench import cases


def pytest_addoption(parser):
    group = parser.getgroup("rnnfast benchmarks")
    group.addoption(
        "--quick", action="store_true", help="shape S only, few rounds (also RNNFAST_BENCH_QUICK=1)"
    )
    group.addoption(
        "--bench-device",
        default=os.environ.get(
            "RNNFAST_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu"
        ),
        help="device to benchmark on (default: cuda if available, else cpu)",
    )


def _quick(config) -> bool:
    return config.getoption("--quick") or os.environ.get("RNNFAST_BENCH_QUICK", "") not in ("", "0")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: the large shape L (seconds per round)")
    config.addinivalue_line(
        "markers", "compile: torch.compile of a loop (its first call compiles for minutes)"
    )


def pytest_collection_modifyitems(config, items):
    """Quick mode keeps shape S (and tests without a shape), without torch.compile's rows."""
    if not _quick(config):
        return
    keep, drop = [], []
    for item in items:
        shape = getattr(getattr(item, "callspec", None), "params", {}).get("shape")
        quick = shape in (None, "S") and item.get_closest_marker("compile") is None
        (keep if quick else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def bench_device(pytestconfig) -> str:
    return pytestconfig.getoption("--bench-device")


@pytest.fixture(scope="session")
def bench_plan(pytestconfig):
    """``plan(shape) -> (warmup_rounds, rounds)``: the shape's plan, or the quick one."""
    quick = _quick(pytestconfig)

    def plan(shape):
        """shape: a core Shape, or a (warmup, repeat) pair."""
        if quick:
            return cases.QUICK_PLAN["warmup"], cases.QUICK_PLAN["repeat"]
        return (shape.warmup, shape.repeat) if isinstance(shape, cases.Shape) else shape

    return plan
