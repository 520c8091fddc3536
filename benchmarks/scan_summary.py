"""The tables the benchmark session ends with: rnnfast.scan's median per cell, shape and pass
beside the Python loop's, torch.compile's and the fused op's, and each of those over scan's
(above 1: scan faster); then the same ratios from the alternating rounds (each the median of
the rounds' ratios). Plugged into pytest by conftest.py."""

import pytest

from rnnfast.bench import cases, scan_cases
from rnnfast.bench.tables import table

_MEDIANS = pytest.StashKey[dict]()
COLUMNS = ("scan", "loop", "compiled", "fused")
LABELS = {"scan": "scan", "loop": "loop", "compiled": "compiled", "fused": "fused"}


@pytest.fixture
def record_scan_median(pytestconfig):
    """``record(benchmark, (cell, shape, pass), impl, **extra)``: keeps the benchmark's median
    for the session's summary (nothing when benchmarks are disabled)."""

    def record(benchmark, key, impl, **extra):
        stats = getattr(benchmark, "stats", None)
        if stats is None:
            return
        medians = pytestconfig.stash.setdefault(_MEDIANS, {})
        medians.setdefault(key, {})[impl] = {"median_s": stats.stats.median, **extra}

    return record


def _ms(entry) -> str:
    return "-" if entry is None else f"{entry['median_s'] * 1e3:.3f}"


def _over(num, den) -> str:
    if num is None or den is None:
        return "-"
    return _x(num["median_s"] / den["median_s"])


def _order(key):
    cell, shape, pass_ = key
    return scan_cases.CELLS.index(cell), list(cases.SHAPES).index(shape), pass_


def scan_table(medians: dict) -> str:
    header = ["cell", "shape", "pass", *(f"{LABELS[c]} ms" for c in COLUMNS)]
    header += [f"{LABELS[c]} / scan" for c in COLUMNS[1:]]
    header += ["scan 1st call ms", "compile 1st call s"]
    rows = []
    for key in sorted(medians, key=_order):
        got = medians[key]
        if not got.keys() - {"alternating"}:
            continue
        scan, first, compiled = got.get("scan"), got.get("first_call"), got.get("compiled")
        rows.append(
            [
                *key,
                *(_ms(got.get(c)) for c in COLUMNS),
                *(_over(got.get(c), scan) for c in COLUMNS[1:]),
                _ms(first),
                "-" if compiled is None else f"{compiled['first_call_s']:.1f}",
            ]
        )
    return table(header, rows, text_cols=3)


def alternating_table(medians: dict) -> str:
    """The alternating rounds' medians of each implementation's time over scan's."""
    header = ["cell", "shape", "pass", "loop / scan", "fused / scan"]
    rows = []
    for key in sorted(medians, key=_order):
        over = medians[key].get("alternating", {}).get("over_scan")
        if over is not None:
            rows.append([*key, *(_x(over.get(c)) for c in ("loop", "fused"))])
    return table(header, rows, text_cols=3)


def _x(ratio) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def pytest_terminal_summary(terminalreporter, config):
    medians = config.stash.get(_MEDIANS, None)
    if not medians:
        return
    terminalreporter.write_sep(
        "-", "rnnfast.scan: median ms, and each over scan (above 1: scan faster)"
    )
    if any(got.keys() - {"alternating"} for got in medians.values()):
        terminalreporter.write_line(scan_table(medians))
    if any("alternating" in got for got in medians.values()):
        terminalreporter.write_sep(
            "-", "rnnfast.scan in alternating rounds: median of each round's time over scan's"
        )
        terminalreporter.write_line(alternating_table(medians))
