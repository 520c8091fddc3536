"""Compare rnnfast with torch.nn and hand-written Python loops.

    python -m rnnfast.bench                      # all cells and shapes, fwd and fwdbwd
    python -m rnnfast.bench --quick              # shape S only, few repetitions
    python -m rnnfast.bench --shapes S,LM --cells gru --json results.json
    python -m rnnfast.bench --plot speedup.png --compare benchmarks/results/<earlier>.json

Times are the median of ``--repeat`` runs (default per shape, see
``rnnfast._bench_cases.SHAPES``) after warm-up runs, in milliseconds, measured with
``time.perf_counter`` (synchronizing CUDA). Except at S, the implementations of a case run
in rounds, one run of each per round (see ``Shape.interleaved``). For the shapes M and L the table of
forward+backward memory follows: the peak above the level before the step (CPU: peak
RSS, ``VmHWM`` after resetting it through ``/proc/self/clear_refs``; CUDA:
``torch.cuda.max_memory_allocated``) and the bytes of the tensors autograd saves for
backward (unique storages packed by ``saved_tensors_hooks``, not counting the input
and the parameters). For the shapes with a GEMM floor (LM, M, L) a table of the compute
bound follows: each case's GEMM FLOPs at the machine's peak matrix-product rate, measured in
the same run (``_bench_cases.gemm_peak``), the least time any implementation could take.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time

import torch

from . import _bench_cases as cases
from . import _bench_modules as modules
from . import _bench_report, empty_cpu_cache

DEFAULT_PASSES = ("fwd", "fwdbwd")
MAX_OTHER_LOAD = 0.05  # share of CPU time taken by other processes that spoils timings
BASELINES = ("torch_nn", "seed")


# --------------------------------------------------------------------------- measuring
def time_ms(step, warmup: int, repeat: int) -> list[float]:
    """Run ``step`` ``warmup`` times, then return the times of ``repeat`` runs (ms)."""
    return time_rounds({None: step}, warmup, repeat)[None]


def time_rounds(steps: dict, warmup: int, repeat: int) -> dict:
    """The times (ms) of ``repeat`` runs of each of ``steps``, taken in rounds of one run of
    each, after ``warmup`` untimed rounds."""
    times = {name: [] for name in steps}
    for round_ in range(warmup + repeat):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if round_ >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _release_free_memory():
    gc.collect()
    empty_cpu_cache()  # so rnnfast's reused scratch counts in the peak, as if new
    try:  # hand freed heap pages back to the OS so they count again when reused
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_bytes(step, device) -> int | None:
    """Peak memory of one ``step`` above the level before it (None where unsupported)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        return torch.cuda.max_memory_allocated() - base
    _release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        base = _proc_status_kib("VmRSS")
        step()
        return (_proc_status_kib("VmHWM") - base) * 1024
    except OSError:
        return None


def _storage_key(t: torch.Tensor):
    try:
        s = t.untyped_storage()
        return (t.device, s.data_ptr()), s.nbytes()
    except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. opaque)
        return (t.device, id(t)), t.numel() * t.element_size()


def saved_bytes(impl: cases.Impl, x: torch.Tensor) -> int:
    """Bytes of the unique storages autograd saves for backward in one forward,
    the input's and the parameters' not counted."""
    exclude = {_storage_key(t)[0] for t in (x, *impl.params)}
    seen = {}

    def pack(t):
        key, nbytes = _storage_key(t)
        if key not in exclude:
            seen[key] = nbytes
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = impl.forward(x)
    del y
    return sum(seen.values())


class OtherLoad:
    """Share of the machine's CPU time that other processes used while it was open
    (Linux): on a small machine anything above a few percent spoils the timings."""

    def __enter__(self):
        self._start = self._sample()
        return self

    def __exit__(self, *exc):
        busy, total, own = (b - a for a, b in zip(self._start, self._sample()))
        self.fraction = max(0.0, (busy - own) / total) if total else None

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                ticks = [int(v) for v in f.readline().split()[1:9]]
        except OSError:
            return 0, 0, 0
        own = os.times()
        own_ticks = (own.user + own.system) * os.sysconf("SC_CLK_TCK")
        return sum(ticks) - ticks[3] - ticks[4], sum(ticks), own_ticks  # minus idle, iowait


# --------------------------------------------------------------------------- running
def _plan(shape: cases.Shape, args) -> tuple[int, int]:
    if args.quick:
        warmup, repeat = cases.QUICK_PLAN["warmup"], cases.QUICK_PLAN["repeat"]
    else:
        warmup, repeat = shape.warmup, shape.repeat
    return warmup, args.repeat or repeat


class _Progress:
    """A tqdm bar over the timed cases on stderr (where tqdm is installed and stderr is a
    terminal); the log lines go above it."""

    def __init__(self, total: int):
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        self.bar = tqdm(total=total, unit="case", file=sys.stderr, disable=None,
                        desc="rnnfast.bench") if tqdm else None

    def log(self, msg: str):
        if self.bar is not None and not self.bar.disable:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    def advance(self):
        if self.bar is not None:
            self.bar.update()

    def close(self):
        if self.bar is not None:
            self.bar.close()


_progress = _Progress(0)


def _log(msg: str):
    _progress.log(msg)


def run_case(cell: str, shape: cases.Shape, args, report: dict):
    impls = cases.build_impls(cell, shape, args.device)
    x = cases.make_input(cell, shape, args.device)
    _check(cell, shape, impls, x, report)
    for pass_ in args.passes:
        names = cases.impl_names(cell, shape.name)
        for group in [names] if shape.interleaved else [[name] for name in names]:
            _time(cell, shape, pass_, group, impls, x, args, report)
    if shape.name in cases.MEMORY_SHAPES and not args.no_memory:
        for name, impl in impls.items():
            _memory(cell, shape, name, impl, x, args.device, report)


def run_modules(args, report: dict):
    """The module-level groups: rnnfast's layers and cells against torch.nn's."""
    groups = modules.QUICK_GROUPS if args.quick else modules.GROUPS
    for case in modules.cases(groups, args.cells):
        step = modules.make_step(case, args.device)
        warmup, repeat = modules.PLANS[case.group]
        if args.quick:
            warmup, repeat = cases.QUICK_PLAN["warmup"], cases.QUICK_PLAN["repeat"]
        with OtherLoad() as load:
            times = time_ms(step, warmup, args.repeat or repeat)
        report["modules"].append({"group": case.group, "cell": case.cell, "pass": case.pass_,
                                  "impl": case.impl, "median_ms": statistics.median(times),
                                  "times_ms": times, "other_load": load.fraction})
        _log(f"  {case.name:40s} {report['modules'][-1]['median_ms']:10.3f} ms"
             + _busy_mark(load.fraction))
        _progress.advance()


def _check(cell, shape, impls, x, report):
    """Agreement of the implementations of the same math (x.grad too, below L)."""
    for a, b, what, diff, ok in cases.check_agreement(impls, x, backward=shape.name != "L"):
        report["agreement"].append(
            {"cell": cell, "shape": shape.name, "a": a, "b": b, "what": what, "max_abs_diff": diff, "ok": ok}
        )
        if not ok:
            _log(f"  WARNING {cell} {shape.name}: {a} and {b} differ in {what} by {diff:.3g}")


def _time(cell, shape, pass_, names, impls, x, args, report):
    """Times the implementations ``names`` of one case together, in rounds (time_rounds)."""
    steps = {name: cases.case_step(cell, shape, pass_, name, impls, x) for name in names}
    with OtherLoad() as load:
        all_times = time_rounds(steps, *_plan(shape, args))
    del steps  # the GEMM floor's buffers
    for name, times in all_times.items():
        median = statistics.median(times)
        report["timings"].append(
            {
                "cell": cell,
                "shape": shape.name,
                "pass": pass_,
                "impl": name,
                "median_ms": median,
                "times_ms": times,
                "gemm_gflop": cases.gemm_flops(cell, shape, pass_) / 1e9,
                "other_load": load.fraction,
            }
        )
        _log(f"  {pass_:10s} {cases.LABELS[name]:10s} {median:10.3f} ms" + _busy_mark(load.fraction))
        _progress.advance()


def _memory(cell, shape, name, impl, x, device, report):
    report["memory"].append(
        {
            "cell": cell,
            "shape": shape.name,
            "impl": name,
            "peak_bytes": peak_memory_bytes(cases.make_step(impl, x, "fwdbwd"), device),
            "saved_bytes": saved_bytes(impl, x),
        }
    )


def machine_info(device) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    dev = torch.device(device)
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if dev.type == "cuda":
        info["cuda"] = torch.version.cuda
    info["rnnfast"] = getattr(sys.modules[__package__], "__version__", None)
    return info


# --------------------------------------------------------------------------- printing
def _busy_mark(other_load) -> str:
    return "*" if other_load is not None and other_load > MAX_OTHER_LOAD else ""


def _fmt_ms(t) -> str:
    if t is None:
        return "-"
    v = t["median_ms"]
    text = f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 1000 else f"{v:.0f}"
    return text + _busy_mark(t["other_load"])


def _fmt_x(num, den) -> str:
    return "-" if num is None or den is None else f"{num['median_ms'] / den['median_ms']:.2f}x"


def _fmt_mib(v) -> str:
    return "-" if v is None else f"{v / 2**20:.1f}"


def _table(header: list[str], rows: list[list[str]], text_cols: int) -> str:
    """Columns padded to width: the first ``text_cols`` left-aligned, the others right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r):
        return "  ".join(c.ljust(w) if i < text_cols else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def timing_table(report: dict) -> str:
    ms = {(t["cell"], t["shape"], t["pass"], t["impl"]): t for t in report["timings"]}
    keys = sorted({k[:3] for k in ms}, key=_case_order)
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
        row = [cell, shape, pass_, *(_fmt_ms(get(n)) for n in impls)]
        row += [_fmt_x(get(b), get(r)) for b, r in cases.same_math_rnnfast(cell).items()]
        if with_floor:
            floor = get("gemm_floor")
            if floor is not None:
                floor = {**floor, "median_ms": min(floor["times_ms"])}
            row += [_fmt_ms(floor), _fmt_x(get("rnnfast"), floor), _fmt_x(get("torch_nn"), floor)]
        rows.append(row)
    return _table(header, rows, text_cols=3)


def module_table(report: dict) -> str:
    ms = {(t["group"], t["cell"], t["pass"], t["impl"]): t for t in report["modules"]}
    keys = sorted({k[:3] for k in ms}, key=lambda k: (modules.GROUPS.index(k[0]),
                                                      modules.CELLS.index(k[1]), k[2]))
    impls = [n for n in modules.LABELS if any(k[3] == n for k in ms)]
    baselines = [n for n in ("torch_nn", "seed") if n in impls]
    header = ["group", "cell", "pass", *(modules.LABELS[n] for n in impls)]
    header += [f"x {modules.LABELS[b]}" for b in baselines]
    rows = []
    for key in keys:
        get = lambda n: ms.get((*key, n))  # noqa: E731
        rows.append([*key, *(_fmt_ms(get(n)) for n in impls),
                     *(_fmt_x(get(b), get("rnnfast")) for b in baselines)])
    return _table(header, rows, text_cols=3)


def compute_bound_table(report: dict) -> str:
    """Per case with GEMM FLOPs counted (LM, M, L): the bound (those FLOPs at the measured
    peak rate), rnnfast's and torch.nn's medians as shares of the peak rate, and torch.nn
    over the bound: the most any implementation could gain over torch.nn on this machine."""
    peak = report.get("gemm_peak")
    if not peak:
        return ""
    ms = {(t["cell"], t["shape"], t["pass"], t["impl"]): t for t in report["timings"]}
    keys = sorted({k[:3] for k in ms if k[1] in cases.FLOOR_SHAPES}, key=_case_order)
    header = ["cell", "shape", "pass", "GFLOP", "bound ms", "rnnfast % of peak",
              "torch.nn % of peak", "torch.nn / bound"]
    rows = []
    for cell, shape, pass_ in keys:
        gflop = cases.gemm_flops(cell, cases.SHAPES[shape], pass_) / 1e9
        bound = {"median_ms": gflop / peak["gflops"] * 1e3, "other_load": None}
        share = lambda n: ("-" if (cell, shape, pass_, n) not in ms else  # noqa: E731
                           f"{bound['median_ms'] / ms[(cell, shape, pass_, n)]['median_ms']:.0%}")
        rows.append([cell, shape, pass_, f"{gflop:.3g}", _fmt_ms(bound), share("rnnfast"),
                     share("torch_nn"), _fmt_x(ms.get((cell, shape, pass_, "torch_nn")), bound)])
    return _table(header, rows, text_cols=3) if rows else ""


def memory_table(report: dict) -> str:
    mem = {(m["cell"], m["shape"], m["impl"]): m for m in report["memory"]}
    keys = sorted({k[:2] for k in mem}, key=_case_order)
    impls = [n for n in cases.LABELS if any(k[2] == n for k in mem)]
    header = ["cell", "shape", *(cases.LABELS[n] for n in impls)]
    rows = []
    for cell, shape in keys:
        cols = []
        for n in impls:
            m = mem.get((cell, shape, n))
            cols.append("-" if m is None else f"{_fmt_mib(m['peak_bytes'])} / {_fmt_mib(m['saved_bytes'])}")
        rows.append([cell, shape, *cols])
    return _table(header, rows, text_cols=2)


def _case_order(key):
    order = {**{c: i for i, c in enumerate(cases.CELLS)}, **{s: i for i, s in enumerate(cases.SHAPES)}}
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
        "x torch.nn: torch.nn time / rnnfast time; x seed loop: seed time / rnnfast time "
        "(gru: rnnfast rb = reset_after=False, the seed's cell; rnnfast = nn.GRU's cell)"
    )
    bound = compute_bound_table(report)
    if bound:
        peak = report["gemm_peak"]
        print(f"\ncompute bound: peak {peak['gflops']:.0f} GF/s (the fastest of "
              f"{len(peak['times_ms'])} float32 products {peak['n']}^3 through torch.mm, "
              f"{m['threads']} threads); bound = the case's GEMM FLOPs at that rate")
        print(bound)
        print("torch.nn / bound: the most any implementation doing these FLOPs could gain over "
              "torch.nn here")
    if report["memory"]:
        print("\nforward+backward memory, MiB: peak above the level before the step / saved for backward")
        print(memory_table(report))
    if report["modules"]:
        print("\nlayers and cells, ms (layer-S: 1 layer at S, rnnfast op: the bare functional op; "
              "stack-LM: 2 layers, bidirectional, B=32 T=35 I=28 H=256; generate-200: 200 cell "
              "calls, B=1 I=28 H=256, seed loop: a hand-written step)")
        print(module_table(report))
    if any(_busy_mark(t["other_load"]) for t in report["timings"] + report["modules"]):
        print(
            f"\n* other processes took more than {MAX_OTHER_LOAD:.0%} of the CPU time while this was "
            "measured: unreliable (run again on an idle machine)"
        )
    bad = [a for a in report["agreement"] if not a["ok"]]
    if bad:
        print(f"\nWARNING: {len(bad)} disagreement(s) between implementations of the same math (see --json)")


# --------------------------------------------------------------------------- CLI
def _csv(choices):
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        unknown = [t for t in items if t not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}, choose from {list(choices)}")
        return tuple(items)

    return parse


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m rnnfast.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cells", type=_csv(cases.CELLS), default=cases.CELLS)
    p.add_argument("--shapes", type=_csv(cases.SHAPES), default=tuple(cases.SHAPES))
    p.add_argument("--passes", type=_csv(cases.PASSES), default=DEFAULT_PASSES)
    p.add_argument("--repeat", type=int, default=None, help="timed runs per case (default: per shape)")
    p.add_argument("--quick", action="store_true", help="shape S only, few repetitions")
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    p.add_argument("--no-modules", action="store_true",
                   help="skip the layer and cell benchmarks (rnnfast.RNN/GRU/LSTM and cells)")
    p.add_argument("--json", metavar="PATH", help="write all figures and machine info to PATH")
    p.add_argument("--plot", metavar="PATH",
                   help="draw the speedups over torch.nn and hand-written loops to PATH (PNG, SVG, ...)")
    p.add_argument("--compare", metavar="OLD_JSON",
                   help="show what changed since an earlier run's --json file")
    p.add_argument("--from-json", metavar="PATH",
                   help="measure nothing: report (and --plot, --compare) an earlier run's --json file")
    args = p.parse_args(argv)
    for option, path in (("--compare", args.compare), ("--from-json", args.from_json)):
        if path and not os.path.isfile(path):
            p.error(f"{option}: no such file: {path}")
    if args.plot and not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        p.error(f"--plot: the folder of {args.plot} does not exist")
    if args.quick:
        args.shapes = ("S",)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    report = {
        "machine": machine_info(args.device),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "timings": [],
        "memory": [],
        "agreement": [],
        "modules": [],
    }
    old_report = _load_report(args.compare) if args.compare else None
    if args.from_json:
        report = _load_report(args.from_json)
        print_report(report)
        _plot_and_compare(args, report, old_report)
        return report
    global _progress
    _progress = _Progress(_case_count(args))
    start = time.perf_counter()
    measure_peak = any(s in cases.FLOOR_SHAPES for s in args.shapes)
    try:
        if measure_peak:  # at the start and at the end: a bound takes the faster spell
            report["gemm_peak"] = cases.gemm_peak(args.device)
        for shape_name in args.shapes:
            for cell in args.cells:
                shape = cases.SHAPES[shape_name]
                _log(f"{cell} {shape}")
                run_case(cell, shape, args, report)
        if not args.no_modules:
            _log("layers and cells")
            run_modules(args, report)
        if measure_peak:
            again = cases.gemm_peak(args.device)
            peak = report["gemm_peak"]
            peak["times_ms"] += again["times_ms"]
            peak["gflops"] = max(peak["gflops"], again["gflops"])
    finally:
        _progress.close()
    report["settings"]["wall_s"] = time.perf_counter() - start
    print_report(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"\nwrote {args.json}")
    _plot_and_compare(args, report, old_report)
    return report


def _load_report(path: str) -> dict:
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"rnnfast.bench: cannot read the report {path}: {e}") from e
    if not isinstance(report, dict) or "timings" not in report or "machine" not in report:
        raise SystemExit(f"rnnfast.bench: {path} is not a report of python -m rnnfast.bench --json")
    for key in ("memory", "agreement", "modules"):  # older reports lack some sections
        report.setdefault(key, [])
    return report


def _plot_and_compare(args, report: dict, old_report) -> None:
    if args.plot:
        _bench_report.plot_report(report, args.plot)
        print(f"drew {args.plot}")
    if old_report is not None:
        print(_bench_report.compare_reports(old_report, report))


def _case_count(args) -> int:
    core = sum(len(args.passes) * len(cases.impl_names(cell, shape))
               for shape in args.shapes for cell in args.cells)
    groups = modules.QUICK_GROUPS if args.quick else modules.GROUPS
    return core + (0 if args.no_modules else len(list(modules.cases(groups, args.cells))))


if __name__ == "__main__":
    main()
