"""GPU benchmark: rnnfast against torch.nn (cuDNN) and hand-written Python loops.

    python -m rnnfast.bench.cuda --out DIR [--budget-s 240] [--quick]
        [--batches 1,8 --steps 100 --hidden 256] [--device cpu]

Single layer, unidirectional, I = H, the input projection included on every side, the same
dtype on every side: float32 (TF32 off, for cuBLAS and cuDNN) and bfloat16. Passes:
``fwd`` (inference, under no_grad) and ``fwdbwd`` (forward, then backward of the sum of
the output into the input and every parameter). Every timed call ends with
``torch.cuda.synchronize()``; a figure is the median of the timed runs after a warm-up.

rnnfast and cuDNN run on the whole grid (B in 1, 8, 64, 256; T in 100, 1024; H in 128,
256, 512, 1024). The hand-written loops (one Python-level step per time step, some tens of
microseconds a step) run with a single timed run: at T = 100 beside the others, at T = 1024
on a few shapes only, after the whole grid, while the time budget lasts. What was left out,
and why (the budget, out of memory, an error), is listed in the report; a CUDA error stops
the run, since every later call would fail too. Each case also times its GEMM floor (the
same matrix products and nothing else, captured once in a CUDA graph and replayed:
``cases.gemm_floor_step``). rnnfast's path runs those products through cuBLAS too,
so ``loop / floor`` is the most it could gain over the hand loop at that shape: where that
is under 20x, the loop target is out of this path's reach (large B and H, where the hand loop
is as bound by the same GEMMs as everything else), and the table says so. GRU: cuDNN's
cell is reset-after, the hand loop's reset-before, so each is compared with the rnnfast cell of
the same math.

Writes DIR/bench_cuda.json (every figure) and DIR/bench_cuda.txt (a short table with the
speedups, the floor, and the targets: >= 20x the hand loops, >= 0.9x cuDNN where B >= 64),
anew after every case, so that an interrupted run leaves what it measured.
``--device cpu`` runs the same script on the CPU: a smoke test of it without a GPU (the
tests do so), not a benchmark of the CPU (that is ``python -m rnnfast.bench``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from .. import functional as RF
from . import baselines, cases

BATCHES = (1, 8, 64, 256)
STEPS = (100, 1024)
HIDDEN = (128, 256, 512, 1024)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
PASSES = ("fwd", "fwdbwd")
# Shapes (B, H) at which the hand loops are also timed at T = 1024.
SEED_LONG_SHAPES = ((1, 128), (64, 512), (256, 1024))
# (B, T, H) at which the outputs of every implementation are compared (or, where the grid
# lacks it, its first shape).
AGREEMENT_SHAPE = (8, 100, 256)
SEED_TARGET = 20.0
CUDNN_TARGET = 0.9


def make_impls(cell, B, T, H, dtype, device):
    """name -> (forward(x) -> y, params, math), all from one set of torch.nn weights."""
    shape = cases.Shape("g", B, T, H, H, warmup=1, repeat=3)
    module = cases.make_torch_module(cell, shape, device).to(dtype)
    weights = cases.torch_weights(module)
    batch_first = cases.BATCH_FIRST[cell]
    impls = {}

    def rnnfast_impl(reset_after):
        op = getattr(RF, cell)
        kw = {"batch_first": batch_first}
        if cell == "gru":
            kw["reset_after"] = reset_after

        def forward(x):
            output, h_n = op(x, *weights, **kw)
            return h_n if cell == "rnn" else output

        return forward, list(weights)

    impls["rnnfast"] = rnnfast_impl(True) + ("rb" if cell == "rnn" else "ra",)
    if cell == "gru":
        impls["rnnfast_rb"] = rnnfast_impl(False) + ("rb",)

    def torch_forward(x):
        # Without grad, cuDNN's inference forward (no reserve space): its best case.
        module.train(torch.is_grad_enabled())
        output, h_n = module(x)
        return h_n if cell == "rnn" else output

    impls["torch_nn"] = (torch_forward, list(module.parameters()), "ra")

    if cell == "rnn":
        srn = baselines.seed_srn_from_torch(*weights).to(dtype)
        h0 = torch.zeros(B, H, dtype=dtype, device=device)
        impls["seed"] = (lambda x: srn(x, h0), list(srn.parameters()), "rb")
    else:
        if cell == "gru":
            params = baselines.seed_gru_params_from_torch(*weights)
            loop = baselines.seed_gru
        else:
            params = baselines.seed_lstm_params_from_torch(*weights)
            loop = baselines.seed_lstm
        n_states = 1 if cell == "gru" else 2
        state = tuple(torch.zeros(B, H, dtype=dtype, device=device) for _ in range(n_states))
        impls["seed"] = (
            lambda x: loop(x, state, params)[0],
            params,
            "rb" if cell == "gru" else "ra",
        )
    return impls


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def make_step(forward, params, x, pass_):
    leaves = [x, *params]
    device = x.device.type
    if pass_ == "fwd":

        def step():
            with torch.no_grad():
                forward(x)
            synchronize(device)

    else:

        def step():
            for t in leaves:
                t.grad = None
            forward(x).float().sum().backward()
            synchronize(device)

    return step


def time_ms(step, repeat):
    step()  # warm-up: allocator, cuBLAS/cuDNN plans
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), times


def agreement(impls, x, dtype):
    """Max relative difference of y between rnnfast and the baselines of the same math."""
    ys = {}
    with torch.no_grad():
        for name, (forward, _, _) in impls.items():
            ys[name] = forward(x).float()
    out = {}
    for name, (_, _, math) in impls.items():
        if name.startswith("rnnfast"):
            continue
        ours = "rnnfast_rb" if (math == "rb" and "rnnfast_rb" in impls) else "rnnfast"
        diff = (ys[name] - ys[ours]).abs().max().item()
        out[f"{ours} vs {name}"] = diff / max(1.0, ys[name].abs().max().item())
    return out


def _is_cuda_error(error: BaseException) -> bool:
    """A CUDA error (an illegal address, a launch failure) is sticky: every later call in the
    process fails, so the run stops at the first."""
    accelerator_error = getattr(torch, "AcceleratorError", ())
    return isinstance(error, accelerator_error) or "CUDA error" in str(error)


def run(args, save=lambda report: None):
    """Times the grid; ``save(report)`` gets the report as it stands after every case, so that
    what was measured survives a failure, an interruption or the step's time limit."""
    device = args.device
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    started = time.perf_counter()
    results, skipped, checks = [], [], {}
    # Short sequences first, every cell and dtype of them: a run cut short by its budget still
    # has a figure for each, rather than the float32 half of the grid alone.
    grid = [
        (c, d, B, T, H)
        for T in args.steps
        for d in args.dtypes
        for c in args.cells
        for B in args.batches
        for H in args.hidden
    ]
    shapes = [(B, T, H) for _, _, B, T, H in grid]
    agreement_shape = AGREEMENT_SHAPE if AGREEMENT_SHAPE in shapes else shapes[0]
    on_gpu = device == "cuda"
    report = dict(
        machine=dict(
            device=torch.cuda.get_device_name() if on_gpu else platform.processor(),
            torch=torch.__version__,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version() if on_gpu else None,
        ),
        plan=dict(
            batches=args.batches,
            steps=args.steps,
            hidden=args.hidden,
            cells=args.cells,
            dtypes=args.dtypes,
            passes=args.passes,
            repeat=args.repeat,
            seed_repeat=1,
            seed_long_shapes=SEED_LONG_SHAPES,
            budget_s=args.budget_s,
        ),
        results=results,
        skipped=skipped,
        agreement=checks,
        seconds=0.0,
        stopped=None,
    )

    def snapshot():
        report["seconds"] = time.perf_counter() - started
        save(report)

    def over_budget():
        return time.perf_counter() - started > args.budget_s

    def skip(why, **case):
        skipped.append(dict(case, why=why))

    def timed(case, this, make_step_, repeat, **figures):
        """Times the step make_step_() builds into the results, with `figures`; records why
        not in `skipped` (the budget, out of memory, an error), and stops the run at a CUDA
        error."""
        if report["stopped"] is not None or over_budget():
            skip(report["stopped"] or "time budget", **this)
            return
        try:
            ms, runs = time_ms(make_step_(), repeat)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            skip("out of memory", **this)
            return
        except Exception as error:  # noqa: BLE001 (recorded, and the run goes on)
            skip(f"{type(error).__name__}: {str(error).splitlines()[0][:300]}", **this)
            if _is_cuda_error(error):
                report["stopped"] = f"a CUDA error in {this['impl']} {this['pass_']} at {case}"
            return
        results.append(dict(this, ms=ms, runs_ms=runs, **figures))

    def time_floor(case, cell, B, T, H, dtype):
        """The case's GEMMs alone, replayed from a CUDA graph (cases.gemm_floor_step)."""
        shape = cases.Shape("g", B, T, H, H, warmup=1, repeat=args.repeat)
        for pass_ in args.passes:
            timed(
                case,
                dict(case, impl="gemm_floor", pass_=pass_),
                lambda: cases.gemm_floor_step(cell, shape, pass_, device, dtype),
                args.repeat,
                math=None,
                gemm_gflop=cases.gemm_flops(cell, shape, pass_) / 1e9,
            )
            if report["stopped"] is None and on_gpu:
                torch.cuda.empty_cache()  # the pass's buffers and graph, before the next's

    # First rnnfast, cuDNN and the hand loops at T <= 100 (a few ms a pass) everywhere, then the
    # hand loops' long sequences while the budget lasts.
    try:
        for phase in ("fast", "seed"):
            for cell, dname, B, T, H in grid:
                case = dict(cell=cell, dtype=dname, B=B, T=T, H=H, phase=phase)
                if phase == "seed" and not (T > 100 and (B, H) in SEED_LONG_SHAPES):
                    continue
                if report["stopped"] is not None or over_budget():
                    skip(report["stopped"] or "time budget", **case)
                    continue
                dtype = DTYPES[dname]
                torch.manual_seed(0)
                impls = make_impls(cell, B, T, H, dtype, device)
                dims = (B, T, H) if cases.BATCH_FIRST[cell] else (T, B, H)
                x = torch.randn(dims, device=device, dtype=dtype).requires_grad_()
                if phase == "fast" and (B, T, H) == agreement_shape:
                    key = f"{cell} {dname} B={B} T={T} H={H}"
                    try:
                        checks[key] = agreement(impls, x, dtype)
                    except Exception as error:  # noqa: BLE001 (the timing below names it too)
                        checks[key] = {"error": f"{type(error).__name__}: {error}"[:300]}
                names = (
                    ["seed"] if phase == "seed" else [n for n in impls if n != "seed" or T <= 100]
                )
                for name in names:
                    forward, params, math = impls[name]
                    for pass_ in args.passes:
                        timed(
                            case,
                            dict(case, impl=name, pass_=pass_),
                            lambda: make_step(forward, params, x, pass_),
                            1 if name == "seed" else args.repeat,
                            math=math,
                        )
                impls = x = None  # freed before the floor's buffers
                if phase == "fast":
                    time_floor(case, cell, B, T, H, dtype)
                if report["stopped"] is None:
                    torch.cuda.empty_cache()
                snapshot()
    except KeyboardInterrupt:
        report["stopped"] = "interrupted (the time limit of the step that ran it)"
    snapshot()
    return report


def speedups(report):
    """Rows (cell, dtype, pass, B, T, H, ms rnnfast, x vs cuDNN, x vs seed, floor ms, seed /
    floor, cuDNN / floor); None where a figure is missing."""
    ms = {
        (r["cell"], r["dtype"], r["pass_"], r["B"], r["T"], r["H"], r["impl"]): r["ms"]
        for r in report["results"]
    }
    rows = []
    for (cell, dtype, pass_, B, T, H, impl), t in sorted(ms.items()):
        if impl != "rnnfast":
            continue
        key = (cell, dtype, pass_, B, T, H)
        cudnn = ms.get(key + ("torch_nn",))
        seed = ms.get(key + ("seed",))
        floor = ms.get(key + ("gemm_floor",))
        same_as_seed = ms.get(key + ("rnnfast_rb",), t)

        def ratio(a, b):
            return None if a is None or b is None else a / b

        rows.append(
            dict(
                cell=cell,
                dtype=dtype,
                pass_=pass_,
                B=B,
                T=T,
                H=H,
                ms=t,
                vs_cudnn=ratio(cudnn, t),
                vs_seed=ratio(seed, same_as_seed),
                floor_ms=floor,
                seed_over_floor=ratio(seed, floor),
                cudnn_over_floor=ratio(cudnn, floor),
            )
        )
    return rows


def table(report):
    rows = speedups(report)
    lines = [
        f"rnnfast on {report['machine']['device']}, torch {report['machine']['torch']}, "
        f"cuDNN {report['machine']['cudnn']}; speedup = baseline time / rnnfast time",
        f"targets: >= {SEED_TARGET:g}x the hand loops everywhere, >= {CUDNN_TARGET:g}x cuDNN "
        "where B >= 64 (! marks a miss)",
        "floor: the case's GEMMs alone, replayed from a CUDA graph; loop/fl is the most "
        "any implementation running them through cuBLAS could gain over the hand loop "
        f"(< marks one under {SEED_TARGET:g}x: that target is out of this path's reach)",
        "",
    ]
    head = (
        f"{'cell':5} {'dtype':9} {'pass':6} {'B':>4} {'T':>5} {'H':>5} {'ms':>9} "
        f"{'x cuDNN':>8} {'x loop':>8} {'floor ms':>9} {'loop/fl':>8} {'cuDNN/fl':>8}"
    )
    lines += [head, "-" * len(head)]
    misses = beyond_floor = 0
    for r in rows:

        def fmt(v, mark=False):
            return f"{'-':>8}" if v is None else f"{v:7.2f}{'!' if mark else ' '}"

        cudnn_miss = r["vs_cudnn"] is not None and r["B"] >= 64 and r["vs_cudnn"] < CUDNN_TARGET
        seed_miss = r["vs_seed"] is not None and r["vs_seed"] < SEED_TARGET
        out_of_reach = r["seed_over_floor"] is not None and r["seed_over_floor"] < SEED_TARGET
        misses += cudnn_miss + seed_miss
        beyond_floor += seed_miss and out_of_reach
        seed_bound = (
            f"{'-':>8}"
            if r["seed_over_floor"] is None
            else f"{r['seed_over_floor']:7.2f}{'<' if out_of_reach else ' '}"
        )
        floor = f"{'-':>9}" if r["floor_ms"] is None else f"{r['floor_ms']:9.3f}"
        lines.append(
            f"{r['cell']:5} {r['dtype']:9} {r['pass_']:6} {r['B']:>4} {r['T']:>5} "
            f"{r['H']:>5} {r['ms']:9.3f} {fmt(r['vs_cudnn'], cudnn_miss)} "
            f"{fmt(r['vs_seed'], seed_miss)} {floor} {seed_bound} "
            f"{fmt(r['cudnn_over_floor'])}"
        )
    lines += [
        "",
        f"target misses: {misses} (of the hand-loop ones, {beyond_floor} out of reach "
        "of any implementation above the floor); "
        f"skipped: {len(report['skipped'])}; "
        f"agreement (max rel. diff of y): {json.dumps(report['agreement'])}",
        f"took {report['seconds']:.0f} s",
    ]
    if report["stopped"] is not None:
        lines.append(f"STOPPED early: {report['stopped']}")
    failures = [
        case for case in report["skipped"] if case["why"] not in ("time budget", report["stopped"])
    ]
    lines += [f"failed: {f}" for f in failures[:20]]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for bench_cuda.json and bench_cuda.txt")
    p.add_argument(
        "--budget-s",
        type=float,
        default=240.0,
        help="stop starting new cases after this many seconds",
    )
    p.add_argument("--repeat", type=int, default=3, help="timed runs of rnnfast and cuDNN")
    p.add_argument("--quick", action="store_true", help="a few small shapes (smoke test)")
    for name, default in (("batches", BATCHES), ("steps", STEPS), ("hidden", HIDDEN)):
        p.add_argument(
            f"--{name}",
            type=_sizes,
            default=None,
            help=f"comma-separated {name} (default {','.join(map(str, default))})",
        )
    p.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cpu: run this script without a GPU (a smoke test, not a benchmark)",
    )
    args = p.parse_args(argv)
    args.cells, args.dtypes, args.passes = list(cases.CELLS), list(DTYPES), list(PASSES)
    grid = dict(batches=list(BATCHES), steps=list(STEPS), hidden=list(HIDDEN))
    if args.quick:
        grid = dict(batches=[8, 64], steps=[100], hidden=[256])
        args.repeat = 1
    for name, sizes in grid.items():
        if getattr(args, name) is None:
            setattr(args, name, sizes)
    return args


def _sizes(text):
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas, got {text!r}"
        )
    return sizes


def main(argv=None):
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("rnnfast.bench.cuda: no CUDA GPU (--device cpu runs it on the CPU)")
    os.makedirs(args.out, exist_ok=True)

    def save(report):
        for name, text in (
            ("bench_cuda.json", json.dumps(report, indent=1)),
            ("bench_cuda.txt", table(report) + "\n"),
        ):
            path = os.path.join(args.out, name)
            with open(path + ".part", "w") as f:
                f.write(text)
            os.replace(path + ".part", path)  # never a half-written file, even if killed

    report = run(args, save)
    print(table(report))
    return report


if __name__ == "__main__":
    main()
