"""Compare rnnfast with torch.nn and hand-written Python loops.

    python -m rnnfast.bench                      # shapes S, B1, LM, M; all cells, fwd and fwdbwd
    python -m rnnfast.bench --quick              # shape S only, few repetitions
    python -m rnnfast.bench --full               # every shape, L included
    python -m rnnfast.bench --shapes S,LM --cells gru --json results.json
    python -m rnnfast.bench --plot speedup.png --compare benchmarks/results/<earlier>.json

Times are the median of ``--repeat`` runs (default per shape, see
``rnnfast.bench.cases.SHAPES``) after warm-up runs, in milliseconds, measured with
``time.perf_counter`` (synchronizing CUDA). Except at S, the implementations of a case run
in rounds, one run of each per round (see ``Shape.interleaved``). For the shapes M and L the
table of
forward+backward memory follows: the peak above the level before the step (CPU: peak
RSS, ``VmHWM`` after resetting it through ``/proc/self/clear_refs``; CUDA:
``torch.cuda.max_memory_allocated``) and the bytes of the tensors autograd saves for
backward (unique storages packed by ``saved_tensors_hooks``, not counting the input
and the parameters). For the shapes with a GEMM floor (LM, M, L) a table of the compute
bound follows: each case's GEMM FLOPs at the machine's peak matrix-product rate, measured in
the same run (``cases.gemm_peak``), the least time any implementation could take.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import torch

from . import cases, modes, runner
from .measure import machine_info
from .report import compare_reports, plot_report
from .summary import print_summary
from .tables import print_report

DEFAULT_PLOT = os.path.join("bench-results", "rnnfast-bench.png")  # relative to the cwd


def _csv(choices):
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        unknown = [t for t in items if t not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}, choose from {list(choices)}")
        return tuple(items)

    return parse


def _choices(names, describe=str) -> str:
    return ", ".join(describe(n) for n in names)


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rnnfast.bench",
        description=__doc__.split("\n\n")[0],
        epilog=modes.describe() + "\n\nThe run ends with a summary table and draws the "
        f"speedups to {DEFAULT_PLOT} (--plot PATH elsewhere, --no-plot not at all).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--cells",
        type=_csv(cases.CELLS),
        default=cases.CELLS,
        help=f"comma-separated, of {_choices(cases.CELLS)} (default: all)",
    )
    p.add_argument(
        "--shapes",
        type=_csv(cases.SHAPES),
        default=None,
        help="comma-separated, of "
        + _choices(cases.SHAPES, lambda n: str(cases.SHAPES[n]))
        + " (default: the mode's, see below)",
    )
    p.add_argument(
        "--passes",
        type=_csv(cases.PASSES),
        default=modes.PASSES,
        help=f"comma-separated, of {_choices(cases.PASSES)} (default: {','.join(modes.PASSES)})",
    )
    p.add_argument(
        "--repeat", type=int, default=None, help="timed runs per case (default: per shape)"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_true",
        help=f"shape S only, few repetitions ({modes.MODES['quick'].duration})",
    )
    mode.add_argument(
        "--full",
        action="store_true",
        help=f"every shape, L included ({modes.MODES['full'].duration})",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    p.add_argument(
        "--no-modules",
        action="store_true",
        help="skip the layer and cell benchmarks (rnnfast.RNN/GRU/LSTM and cells)",
    )
    p.add_argument("--json", metavar="PATH", help="write all figures and machine info to PATH")
    p.add_argument(
        "--plot",
        metavar="PATH",
        default=None,
        help="draw the speedups over torch.nn and hand-written loops to PATH (PNG, SVG, "
        f"...; default {DEFAULT_PLOT})",
    )
    p.add_argument("--no-plot", action="store_true", help="draw nothing")
    p.add_argument(
        "--compare", metavar="OLD_JSON", help="show what changed since an earlier run's --json file"
    )
    p.add_argument(
        "--from-json",
        metavar="PATH",
        help="measure nothing: report (and --plot, --compare) an earlier run's --json file",
    )
    return p


def parse_args(argv=None):
    p = _build_parser()
    args = p.parse_args(argv)
    for option, path in (("--compare", args.compare), ("--from-json", args.from_json)):
        if path and not os.path.isfile(path):
            p.error(f"{option}: no such file: {path}")
    if args.plot and not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        p.error(f"--plot: the folder of {args.plot} does not exist")
    if args.plot and args.no_plot:
        p.error("--plot and --no-plot: choose one")
    if args.plot and not have_matplotlib():
        p.error("--plot needs matplotlib: pip install matplotlib")
    if args.repeat is not None and args.repeat < 1:
        p.error(f"--repeat: expected a positive number of runs, got {args.repeat}")
    args.mode = "quick" if args.quick else "full" if args.full else "default"
    mode = modes.MODES[args.mode]
    if args.quick or args.shapes is None:  # --quick has always meant S only
        args.shapes = mode.shapes
    args.module_groups = mode.module_groups
    args.plot_skipped = False
    if not args.no_plot and args.plot is None and not args.from_json:
        # The default plot is a convenience: without matplotlib the run goes on and says so.
        args.plot_skipped = not have_matplotlib()
        args.plot = None if args.plot_skipped else DEFAULT_PLOT
    return args


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


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
    print(
        f"rnnfast.bench, {args.mode} mode ({modes.MODES[args.mode].duration} on a 2-core "
        f"CPU): {runner.case_count(args)} cases; shapes {','.join(args.shapes)}; "
        f"--help lists the modes",
        file=sys.stderr,
        flush=True,
    )
    start = time.perf_counter()
    runner.measure_all(args, report)
    report["settings"]["wall_s"] = time.perf_counter() - start
    print_report(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    _plot_and_compare(args, report, old_report)
    print_summary(report)
    if args.json:
        print(f"figures: {args.json}")
    if args.plot:
        print(f"plot: {args.plot}")
    elif args.plot_skipped:
        print("plot: none drawn, matplotlib is not installed (pip install matplotlib)")
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
        if args.plot == DEFAULT_PLOT:
            os.makedirs(os.path.dirname(DEFAULT_PLOT), exist_ok=True)
        plot_report(report, args.plot)
        print(f"drew {args.plot}")
    if old_report is not None:
        print(compare_reports(old_report, report))


if __name__ == "__main__":
    main()
