"""Running the benchmark's cases: agreement check, timings, memory, module groups, with a
progress bar over the timed cases."""

from __future__ import annotations

import statistics
import sys

from . import cases, modules
from .measure import OtherLoad, peak_memory_bytes, saved_bytes, time_ms, time_rounds
from .tables import busy_mark


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
        self.bar = (
            tqdm(total=total, unit="case", file=sys.stderr, disable=None, desc="rnnfast.bench")
            if tqdm
            else None
        )

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
    for case in modules.cases(args.module_groups, args.cells):
        step = modules.make_step(case, args.device)
        warmup, repeat = modules.PLANS[case.group]
        if args.quick:
            warmup, repeat = cases.QUICK_PLAN["warmup"], cases.QUICK_PLAN["repeat"]
        with OtherLoad() as load:
            times = time_ms(step, warmup, args.repeat or repeat)
        report["modules"].append(
            {
                "group": case.group,
                "cell": case.cell,
                "pass": case.pass_,
                "impl": case.impl,
                "median_ms": statistics.median(times),
                "times_ms": times,
                "other_load": load.fraction,
            }
        )
        _log(
            f"  {case.name:40s} {report['modules'][-1]['median_ms']:10.3f} ms"
            + busy_mark(load.fraction)
        )
        _progress.advance()


def _check(cell, shape, impls, x, report):
    """Agreement of the implementations of the same math (x.grad too, below L)."""
    for a, b, what, diff, ok in cases.check_agreement(impls, x, backward=shape.name != "L"):
        report["agreement"].append(
            {
                "cell": cell,
                "shape": shape.name,
                "a": a,
                "b": b,
                "what": what,
                "max_abs_diff": diff,
                "ok": ok,
            }
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
        _log(f"  {pass_:10s} {cases.LABELS[name]:10s} {median:10.3f} ms" + busy_mark(load.fraction))
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


def measure_all(args, report: dict) -> None:
    """Every case of ``args`` into ``report``, a progress bar over them on stderr."""
    global _progress
    _progress = _Progress(case_count(args))
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


def case_count(args) -> int:
    """The timed cases of a run: the length of its progress bar."""
    core = sum(
        len(args.passes) * len(cases.impl_names(cell, shape))
        for shape in args.shapes
        for cell in args.cells
    )
    groups = modules.cases(args.module_groups, args.cells)
    return core + (0 if args.no_modules else len(list(groups)))
