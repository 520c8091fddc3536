"""rnnfast.scan against the same hand-written step in a Python loop, the loop through
torch.compile, and rnnfast's fused op where it has the cell (float32).

One pytest-benchmark group per "scan-{cell}-{shape}-{pass}"; the first call of scan (trace and
set-up) has its own group per pass. On a shared machine a slow spell can fall on one
implementation's rounds and not on another's, so each case is timed again in alternation
("scan-alternating-..." groups): one run of each implementation per round, their ratios to
scan's run of the same round, and the median of those per ratio. torch.compile's rows are
marked ``compile`` (skipped by --quick and by ``-m "not compile"``; at M also ``slow``): their
first call compiles for minutes, into an empty cache. The session ends with tables of the
ratios (scan_summary.py). The cases are defined in ``rnnfast.bench.scan_cases``.
"""

import statistics
import time

import pytest

from rnnfast.bench import cases, scan_cases

SHAPES = ("S", "M")
FIRST_CALL_ROUNDS = 3  # each round clears the cache, so each traces anew
# (warmup, rounds) of the alternating runs: M's 7 rounds of the groups above are too few for
# a median of ratios
ALTERNATING_PLAN = {"S": (10, 50), "M": (2, 15)}


def _params(impls, marks_at=lambda shape: []):
    for cell in scan_cases.CELLS:
        for shape in SHAPES:
            for pass_ in scan_cases.PASSES:
                for impl in impls(cell):
                    yield pytest.param(
                        cell,
                        shape,
                        pass_,
                        impl,
                        marks=marks_at(shape),
                        id=f"{cell}-{shape}-{pass_}-{impl}",
                    )


def _compile_marks(shape):
    # At M torch.compile unrolls 100 steps, forward and backward: also marked slow.
    return [pytest.mark.compile] + ([pytest.mark.slow] if shape == "M" else [])


@pytest.mark.parametrize(("cell", "shape", "pass_", "impl"), list(_params(scan_cases.impl_names)))
def test_scan(benchmark, bench_device, bench_plan, record_scan_median, cell, shape, pass_, impl):
    shape = cases.SHAPES[shape]
    case = scan_cases.make_case(cell, shape, bench_device)
    step = scan_cases.make_pass(case, scan_cases.forward(case, impl), pass_, impl)
    benchmark.group = f"scan-{cell}-{shape.name}-{pass_}"
    benchmark.extra_info.update(shape=str(shape), impl=scan_cases.LABELS[impl], device=bench_device)
    warmup, rounds = bench_plan(shape)
    benchmark.pedantic(step, warmup_rounds=warmup, rounds=rounds, iterations=1)
    record_scan_median(benchmark, (cell, shape.name, pass_), impl)


@pytest.mark.parametrize(
    ("cell", "shape", "pass_", "impl"), list(_params(lambda c: ["alternating"]))
)
def test_scan_alternating(
    benchmark, bench_device, bench_plan, record_scan_median, cell, shape, pass_, impl
):
    """scan, the loop and the fused op in rounds of one run each: per round each one's time
    over scan's, and the medians of those ratios (in extra_info and the session's table)."""
    shape = cases.SHAPES[shape]
    case = scan_cases.make_case(cell, shape, bench_device)
    steps = {
        name: scan_cases.make_pass(case, scan_cases.forward(case, name), pass_, name)
        for name in scan_cases.impl_names(cell)
    }
    times = {name: [] for name in steps}

    def one_round():
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)

    benchmark.group = f"scan-alternating-{cell}-{shape.name}-{pass_}"
    warmup, rounds = bench_plan(ALTERNATING_PLAN[shape.name])
    benchmark.pedantic(one_round, warmup_rounds=warmup, rounds=rounds, iterations=1)
    timed = {name: t[warmup:] for name, t in times.items()}
    over_scan = {
        name: statistics.median(a / b for a, b in zip(t, timed["scan"]))
        for name, t in timed.items()
        if name != "scan"
    }
    benchmark.extra_info.update(
        shape=str(shape),
        impl="alternating rounds",
        device=bench_device,
        median_ms={name: statistics.median(t) * 1e3 for name, t in timed.items()},
        over_scan=over_scan,
    )
    record_scan_median(benchmark, (cell, shape.name, pass_), "alternating", over_scan=over_scan)


@pytest.mark.parametrize(
    ("cell", "shape", "pass_", "impl"), list(_params(lambda c: ["compiled"], _compile_marks))
)
def test_scan_compiled_loop(
    benchmark,
    bench_device,
    bench_plan,
    record_scan_median,
    monkeypatch,
    tmp_path,
    cell,
    shape,
    pass_,
    impl,
):
    """The loop through torch.compile: its first call (compiling) timed once, then its
    steady state as a row beside scan's."""
    import torch._dynamo

    shape = cases.SHAPES[shape]
    case = scan_cases.make_case(cell, shape, bench_device)
    # a cold cache, as on a user's first run: inductor reuses what any earlier run compiled
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    step = scan_cases.make_pass(case, scan_cases.compiled_loop(case), pass_, "loop")
    start = time.perf_counter()
    step()
    first_call_s = time.perf_counter() - start
    benchmark.group = f"scan-{cell}-{shape.name}-{pass_}"
    benchmark.extra_info.update(
        shape=str(shape), impl="torch.compile loop", device=bench_device, first_call_s=first_call_s
    )
    warmup, rounds = bench_plan(shape)
    benchmark.pedantic(step, warmup_rounds=warmup, rounds=rounds, iterations=1)
    record_scan_median(benchmark, (cell, shape.name, pass_), "compiled", first_call_s=first_call_s)


@pytest.mark.parametrize("pass_", scan_cases.PASSES)
@pytest.mark.parametrize("cell", scan_cases.CELLS)
def test_scan_first_call(benchmark, bench_device, record_scan_median, cell, pass_):
    """scan's first call at S: tracing the step, splitting it and setting up its run (the
    backward's set-up too in fwdbwd), the cache cleared before each round."""
    from rnnfast._scan import clear_cache

    shape = cases.SHAPES["S"]
    case = scan_cases.make_case(cell, shape, bench_device)
    step = scan_cases.make_pass(case, scan_cases.forward(case, "scan"), pass_, "scan")
    benchmark.group = f"scan-first-call-S-{pass_}"
    benchmark.extra_info.update(shape=str(shape), impl="rnnfast.scan first call")
    benchmark.pedantic(step, setup=clear_cache, rounds=FIRST_CALL_ROUNDS, iterations=1)
    record_scan_median(benchmark, (cell, "S", pass_), "first_call")


@pytest.mark.parametrize("cell", scan_cases.CELLS)
def test_scan_same_math(bench_device, cell):
    """What is benchmarked side by side computes the same thing (shape S): scan's and the
    fused op's outputs, final carry and input gradients against the loop's."""
    case = scan_cases.make_case(cell, cases.SHAPES["S"], bench_device)
    checks = scan_cases.check_agreement(case)
    assert {c[0] for c in checks} == set(scan_cases.impl_names(cell)) - {"loop"}
    bad = [c for c in checks if not c[-1]]
    assert not bad, bad
