"""The few lines a run ends with: rnnfast against torch.nn and the hand-written loop per
cell, shape and pass (and rnnfast.scan of that loop's step against the loop), how long the
run took, and a plain warning where other processes disturbed the figures."""

from __future__ import annotations

from . import cases
from .measure import MAX_OTHER_LOAD
from .tables import case_order, fmt_ms, fmt_x, table

COLUMNS = ("rnnfast", "torch_nn", "seed")


def summary_table(report: dict) -> str:
    """One row per timed (cell, shape, pass): the medians of rnnfast, torch.nn and the
    hand-written loop, and each baseline's time over rnnfast's (above 1: rnnfast faster);
    where the report has rnnfast.scan, its median and the loop's time over it."""
    ms = {(t["cell"], t["shape"], t["pass"], t["impl"]): t for t in report["timings"]}
    keys = sorted({k[:3] for k in ms}, key=case_order)
    with_scan = any(k[3] == "scan" for k in ms)  # reports before scan lack it
    columns = COLUMNS + (("scan",) if with_scan else ())
    header = [
        "cell",
        "shape",
        "pass",
        *(f"{cases.LABELS[n]} ms" for n in columns),
        "torch.nn / rnnfast",
        "hand loop / rnnfast",
        *(["hand loop / scan"] if with_scan else []),
    ]
    rows = []
    for cell, shape, pass_ in keys:
        get = lambda n: ms.get((cell, shape, pass_, n))  # noqa: E731
        same_math = cases.same_math_rnnfast(cell)
        rows.append(
            [
                cell,
                shape,
                pass_,
                *(fmt_ms(get(n)) for n in columns),
                fmt_x(get("torch_nn"), get(same_math["torch_nn"])),
                fmt_x(get("seed"), get(same_math["seed"])),
                *([fmt_x(get("seed"), get("scan"))] if with_scan else []),
            ]
        )
    return table(header, rows, text_cols=3)


def disturbed(report: dict) -> tuple[int, int]:
    """(figures timed while other processes took over MAX_OTHER_LOAD of the CPU, all figures)."""
    figures = report["timings"] + report.get("modules", [])
    loads = [f.get("other_load") for f in figures]
    return sum(x is not None and x > MAX_OTHER_LOAD for x in loads), len(figures)


def disturbed_warning(report: dict) -> str:
    """A sentence nobody can miss where any figure was disturbed; "" where none was."""
    bad, total = disturbed(report)
    if not bad:
        return ""
    return (
        f"WARNING: {bad} of {total} figures were disturbed by other processes (they took "
        f"more than {MAX_OTHER_LOAD:.0%} of the CPU while those were measured; marked * "
        "above). Those figures are unreliable: rerun on a quiet machine before quoting them."
    )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def print_summary(report: dict) -> None:
    print(
        "\nsummary: rnnfast against torch.nn and the hand-written loop (hand loop), median ms; "
        "ratios above 1: rnnfast faster"
    )
    print(summary_table(report))
    if "gru" in {t["cell"] for t in report["timings"]}:
        print(
            "gru: the hand loop is a reset-before GRU, compared with rnnfast's reset-before "
            "GRU (rnnfast rb); the rnnfast column is nn.GRU's reset-after cell"
        )
    if any(t["impl"] == "scan" for t in report["timings"]):
        print(
            "scan: rnnfast.scan of the hand loop's step (lstm: the numpy-style step "
            "cat([h, x]) @ W), traced once; hand loop / scan above 1: scan faster"
        )
    wall = report.get("settings", {}).get("wall_s")
    if wall is not None:
        print(f"measured in {_duration(wall)}")
    warning = disturbed_warning(report)
    if warning:
        print("\n" + warning)
