"""The benchmark report as text: the timing, compute-bound, memory and module tables."""

from __future__ import annotations

from . import cases, modules
from .measure import MAX_OTHER_LOAD

BASELINES = ("torch_nn", "seed")


def busy_mark(other_load) -> str:
    return "*" if other_load is not None and other_load > MAX_OTHER_LOAD else ""


def fmt_ms(t) -> str:
    if t is None:
        return "-"
    v = t["median_ms"]
    text = f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 1000 else f"{v:.0f}"
    return text + busy_mark(t["other_load"])


def fmt_x(num, den) -> str:
    return "-" if num is None or den is None else f"{num['median_ms'] / den['median_ms']:.2f}x"


def _fmt_mib(v) -> str:
    return "-" if v is None else f"{v / 2**20:.1f}"


def table(header: list[str], rows: list[list[str]], text_cols: int) -> str:
    """Columns padded to width: the first ``text_cols`` left-aligned, the others right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r):
        return "  ".join(
            c.ljust(w) if i < text_cols else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def timing_table(report: dict) -> str:
    ms = {(t["cell"], t["shape"], t["pass"], t["impl"]): t for t in report["timings"]}
    keys = sorted({k[:3] for k in ms}, key=case_order)
    impls = [n for n in cases.LABELS if n != "gemm_floor" and any(k[3] == n for k in ms)]
    with_floor = any(k[3] == "gemm_floor" for k in ms)
    header = ["cell", "shape", "pass", *(cases.LABELS[n] for n in impls)]
    header += [f"x {cases.LABELS[b]}" for b in BASELINES]
    # The floor is a bound, so its best run stands for it (on a shared machine its median
    # wandered by half between runs). rnnfast / floor: how far from the bound; torch.nn /
    # floor: the most that any implementation doing these GEMMs through this BLAS could gain.
    header += ["GEMM floor", "rnnfast / floor", "torch.nn / floor"] if with_floor else []
    rows = []
    for cell, shape, pass_ in keys:
        get = lambda n: ms.get((cell, shape, pass_, n))  # noqa: E731
        row = [cell, shape, pass_, *(fmt_ms(get(n)) for n in impls)]
        row += [fmt_x(get(b), get(r)) for b, r in cases.same_math_rnnfast(cell).items()]
        if with_floor:
            floor = get("gemm_floor")
            if floor is not None:
                floor = {**floor, "median_ms": min(floor["times_ms"])}
            row += [fmt_ms(floor), fmt_x(get("rnnfast"), floor), fmt_x(get("torch_nn"), floor)]
        rows.append(row)
    return table(header, rows, text_cols=3)


def module_table(report: dict) -> str:
    ms = {(t["group"], t["cell"], t["pass"], t["impl"]): t for t in report["modules"]}
    keys = sorted(
        {k[:3] for k in ms},
        key=lambda k: (modules.GROUPS.index(k[0]), modules.CELLS.index(k[1]), k[2]),
    )
    impls = [n for n in modules.LABELS if any(k[3] == n for k in ms)]
    baselines = [n for n in ("torch_nn", "seed") if n in impls]
    header = ["group", "cell", "pass", *(modules.LABELS[n] for n in impls)]
    header += [f"x {modules.LABELS[b]}" for b in baselines]
    rows = []
    for key in keys:
        get = lambda n: ms.get((*key, n))  # noqa: E731
        rows.append(
            [
                *key,
                *(fmt_ms(get(n)) for n in impls),
                *(fmt_x(get(b), get("rnnfast")) for b in baselines),
            ]
        )
    return table(header, rows, text_cols=3)


def compute_bound_table(report: dict) -> str:
    """Per case with GEMM FLOPs counted (LM, M, L): the bound (those FLOPs at the measured
    peak rate), rnnfast's and torch.nn's medians as shares of the peak rate, and torch.nn
    over the bound: the most any implementation could gain over torch.nn on this machine."""
    peak = report.get("gemm_peak")
    if not peak:
        return ""
    ms = {(t["cell"], t["shape"], t["pass"], t["impl"]): t for t in report["timings"]}
    keys = sorted({k[:3] for k in ms if k[1] in cases.FLOOR_SHAPES}, key=case_order)
    header = [
        "cell",
        "shape",
        "pass",
        "GFLOP",
        "bound ms",
        "rnnfast % of peak",
        "torch.nn % of peak",
        "torch.nn / bound",
    ]
    rows = []
    for cell, shape, pass_ in keys:
        gflop = cases.gemm_flops(cell, cases.SHAPES[shape], pass_) / 1e9
        bound = {"median_ms": gflop / peak["gflops"] * 1e3, "other_load": None}
        share = lambda n: (
            "-"
            if (cell, shape, pass_, n) not in ms
            # noqa: E731
            else f"{bound['median_ms'] / ms[(cell, shape, pass_, n)]['median_ms']:.0%}"
        )
        rows.append(
            [
                cell,
                shape,
                pass_,
                f"{gflop:.3g}",
                fmt_ms(bound),
                share("rnnfast"),
                share("torch_nn"),
                fmt_x(ms.get((cell, shape, pass_, "torch_nn")), bound),
            ]
        )
    return table(header, rows, text_cols=3) if rows else ""


def memory_table(report: dict) -> str:
    mem = {(m["cell"], m["shape"], m["impl"]): m for m in report["memory"]}
    keys = sorted({k[:2] for k in mem}, key=case_order)
    impls = [n for n in cases.LABELS if any(k[2] == n for k in mem)]
    header = ["cell", "shape", *(cases.LABELS[n] for n in impls)]
    rows = []
    for cell, shape in keys:
        cols = []
        for n in impls:
            m = mem.get((cell, shape, n))
            cols.append(
                "-" if m is None else f"{_fmt_mib(m['peak_bytes'])} / {_fmt_mib(m['saved_bytes'])}"
            )
        rows.append([cell, shape, *cols])
    return table(header, rows, text_cols=2)


def case_order(key):
    order = {
        **{c: i for i, c in enumerate(cases.CELLS)},
        **{s: i for i, s in enumerate(cases.SHAPES)},
    }
    order.update({p: i for i, p in enumerate(cases.PASSES)})
    return tuple(order.get(k, 99) for k in key)


def _runs(report: dict) -> str:
    runs = {}
    for t in report["timings"]:
        runs.setdefault(t["shape"], set()).add(len(t["times_ms"]))
    return ", ".join(f"{shape} {'/'.join(map(str, sorted(n)))}" for shape, n in runs.items())


def print_report(report: dict):
    m = report["machine"]
    print(
        f"\nrnnfast {m['rnnfast']} on {m['device_name']} ({m['device']}), {m['threads']} threads, "
        f"torch {m['torch']}, float32\nms, median of runs per shape: {_runs(report)}"
    )
    print(timing_table(report))
    print(
        "x torch.nn: torch.nn time / rnnfast time; x hand loop: its time / rnnfast time "
        "(gru: rnnfast rb = reset_after=False, the hand loop's cell; rnnfast = nn.GRU's cell); "
        "scan: rnnfast.scan of the hand loop's step (lstm: the numpy-style step)"
    )
    bound = compute_bound_table(report)
    if bound:
        peak = report["gemm_peak"]
        print(
            f"\ncompute bound: peak {peak['gflops']:.0f} GF/s (the fastest of "
            f"{len(peak['times_ms'])} float32 products {peak['n']}^3 through torch.mm, "
            f"{m['threads']} threads); bound = the case's GEMM FLOPs at that rate"
        )
        print(bound)
        print(
            "torch.nn / bound: the most any implementation doing these FLOPs could gain over "
            "torch.nn here"
        )
    if report["memory"]:
        print(
            "\nforward+backward memory, MiB: peak above the level before the step / saved for "
            "backward"
        )
        print(memory_table(report))
    if report["modules"]:
        print(
            "\nlayers and cells, ms (layer-S: 1 layer at S, rnnfast op: the bare functional op; "
            "stack-LM: 2 layers, bidirectional, B=32 T=35 I=28 H=256; generate-200: 200 cell "
            "calls, B=1 I=28 H=256, hand loop: a hand-written step)"
        )
        print(module_table(report))
    if any(busy_mark(t["other_load"]) for t in report["timings"] + report["modules"]):
        print(
            f"\n* other processes took more than {MAX_OTHER_LOAD:.0%} of the CPU time while this "
            "was measured: unreliable (run again on an idle machine)"
        )
    bad = [a for a in report["agreement"] if not a["ok"]]
    if bad:
        print(
            f"\nWARNING: {len(bad)} disagreement(s) between implementations of the same math "
            "(see --json)"
        )
