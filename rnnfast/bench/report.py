"""The benchmark report as a picture (``--plot``) and as a change list against an earlier run
(``--compare``). Both read the report dict that ``python -m rnnfast.bench`` builds (and writes
with ``--json``)."""

from __future__ import annotations

import math

from . import cases

PLOT_PASSES = ("fwd", "fwdbwd")
PASS_TITLES = {"fwd": "forward", "fwd_nograd": "forward, no grad", "fwdbwd": "forward + backward"}
CELL_COLOURS = {"rnn": "#4c72b0", "gru": "#dd8452", "lstm": "#55a868"}


def speedups(report: dict) -> dict:
    """``{(baseline, pass, cell, shape): baseline time / rnnfast time}`` for the rnnfast
    implementation computing each baseline's math (as in the printed table)."""
    ms = {(t["cell"], t["shape"], t["pass"], t["impl"]): t["median_ms"] for t in report["timings"]}
    out = {}
    for cell, shape, pass_, impl in ms:
        for baseline, ours in cases.same_math_rnnfast(cell).items():
            if impl == baseline and (cell, shape, pass_, ours) in ms:
                out[(baseline, pass_, cell, shape)] = (
                    ms[(cell, shape, pass_, impl)] / ms[(cell, shape, pass_, ours)]
                )
    return out


def plot_title(report: dict) -> str:
    m = report["machine"]
    return (
        f"rnnfast {m.get('rnnfast')} speedup, float32, on {m['device_name']} "
        f"({m['device']}, {m['threads']} threads)\ntorch {m['torch']}, "
        f"Python {m['python']}, {m['date'][:10]}"
    )


def plot_report(report: dict, path: str) -> None:
    """Grouped bars of rnnfast's speedup: one panel per baseline (torch.nn, the hand-written loops)
    and pass (forward, forward+backward), shapes along x, one bar per cell, log scale with
    the 1x line drawn; each bar carries its figure."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise SystemExit("rnnfast.bench --plot needs matplotlib: pip install matplotlib") from e

    ratios = speedups(report)
    if not ratios:
        raise ValueError("the report has no rnnfast timing next to a baseline to plot")
    passes = [p for p in PLOT_PASSES if any(k[1] == p for k in ratios)] or sorted(
        {k[1] for k in ratios}
    )
    baselines = [b for b in ("torch_nn", "seed") if any(k[0] == b for k in ratios)]
    shapes = [s for s in cases.SHAPES if any(k[3] == s for k in ratios)]
    cells = [c for c in cases.CELLS if any(k[2] == c for k in ratios)]
    values = list(ratios.values())
    low, high = min(min(values), 1.0) / 1.6, max(max(values), 1.0) * 1.8

    fig, axes = plt.subplots(
        len(baselines),
        len(passes),
        squeeze=False,
        sharey=True,
        figsize=(4.2 * len(passes) + 1, 3.2 * len(baselines) + 1),
    )
    width = 0.8 / len(cells)
    for row, baseline in enumerate(baselines):
        for col, pass_ in enumerate(passes):
            ax = axes[row][col]
            for i, cell in enumerate(cells):
                xs, ys = [], []
                for j, shape in enumerate(shapes):
                    r = ratios.get((baseline, pass_, cell, shape))
                    if r is not None:
                        xs.append(j + (i - (len(cells) - 1) / 2) * width)
                        ys.append(r)
                bars = ax.bar(xs, ys, width, label=cell, color=CELL_COLOURS.get(cell))
                ax.bar_label(bars, labels=[_fmt_ratio(y) for y in ys], fontsize=7, padding=1)
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_yscale("log")
            ax.set_ylim(low, high)
            ax.set_xticks(range(len(shapes)), shapes)
            ax.set_title(
                f"vs {cases.LABELS[baseline]}, {PASS_TITLES.get(pass_, pass_)}", fontsize=10
            )
            if col == 0:
                ax.set_ylabel("speedup (x, log scale)")
            ax.grid(axis="y", which="both", alpha=0.25)
    axes[0][-1].legend(title="cell", fontsize=8, loc="upper right")
    fig.suptitle(plot_title(report), fontsize=10)
    fig.text(
        0.5,
        0.005,
        "bars above 1 = rnnfast faster; shapes (B,T,I,H): "
        + ", ".join(
            f"{s}=({cases.SHAPES[s].B},{cases.SHAPES[s].T},{cases.SHAPES[s].I},{cases.SHAPES[s].H})"
            for s in shapes
        ),
        ha="center",
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt_ratio(r: float) -> str:
    return f"{r:.0f}" if r >= 10 else f"{r:.1f}"


def _entries(report: dict) -> dict:
    """Every timed case of a report: ``{(case, impl): median ms}``, core cases named
    "cell shape pass", module-level ones "group cell pass"."""
    out = {
        (f"{t['cell']} {t['shape']} {t['pass']}", t["impl"]): t["median_ms"]
        for t in report.get("timings", [])
    }
    out.update(
        {
            (f"{t['group']} {t['cell']} {t['pass']}", t["impl"]): t["median_ms"]
            for t in report.get("modules", [])
        }
    )
    return out


def compare_reports(old: dict, new: dict, threshold: float = 0.10) -> str:
    """A table of the cases both reports timed: old and new milliseconds and old/new (above 1:
    faster now), marking changes beyond ``threshold``; then how many cases only one has."""
    before, after = _entries(old), _entries(new)
    common = [k for k in after if k in before]
    machine = old.get("machine", {})
    lines = [
        f"\ncompared with the run of {machine.get('date', '?')} on "
        f"{machine.get('device_name', '?')} (torch {machine.get('torch', '?')}); "
        f"old/new above 1: faster now"
    ]
    if machine.get("device_name") != new.get("machine", {}).get("device_name"):
        lines.append("note: the two runs were on different devices")
    rows, faster, slower = [], 0, 0
    for case, impl in common:
        old_ms, new_ms = before[(case, impl)], after[(case, impl)]
        ratio = old_ms / new_ms if new_ms > 0 else math.inf
        mark = ""
        if ratio > 1 + threshold:
            mark, faster = "faster", faster + 1
        elif ratio < 1 / (1 + threshold):
            mark, slower = "slower", slower + 1
        rows.append([case, _label(impl), f"{old_ms:.3f}", f"{new_ms:.3f}", f"{ratio:.2f}x", mark])
    if rows:
        header = ["case", "impl", "old ms", "new ms", "old/new", ""]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, ["-" * w for w in widths], *rows]:
            lines.append(
                "  ".join(
                    c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
                ).rstrip()
            )
    lines.append(
        f"{len(common)} cases in both runs: {faster} faster, {slower} slower by more "
        f"than {threshold:.0%}"
    )
    only_old = sum(k not in after for k in before)
    only_new = sum(k not in before for k in after)
    if only_old or only_new:
        lines.append(f"cases only in the old run: {only_old}; only in the new run: {only_new}")
    return "\n".join(lines)


def _label(impl: str) -> str:
    from . import modules

    return cases.LABELS.get(impl) or modules.LABELS.get(impl, impl)
