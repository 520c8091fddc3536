"""Core benchmarks: rnnfast vs torch.nn vs hand-written loops (and the GEMM floor at LM, M and L).

One pytest-benchmark group per "{cell}-{shape}-{pass}"; the cases themselves are
defined in ``rnnfast.bench.cases`` and shared with ``python -m rnnfast.bench``.
"""

import pytest

from rnnfast.bench import cases


def _core_cases():
    for cell in cases.CELLS:
        for shape in cases.SHAPES:
            marks = [pytest.mark.slow] if shape == "L" else []
            for pass_ in cases.PASSES:
                for impl in cases.impl_names(cell, shape):
                    yield pytest.param(
                        cell, shape, pass_, impl, marks=marks, id=f"{cell}-{shape}-{pass_}-{impl}"
                    )


@pytest.mark.parametrize(("cell", "shape", "pass_", "impl"), list(_core_cases()))
def test_core(benchmark, bench_device, bench_plan, cell, shape, pass_, impl):
    shape = cases.SHAPES[shape]
    impls = (
        {} if impl == "gemm_floor" else cases.build_impls(cell, shape, bench_device, names=[impl])
    )
    x = cases.make_input(cell, shape, bench_device)
    step = cases.case_step(cell, shape, pass_, impl, impls, x)
    benchmark.group = f"{cell}-{shape.name}-{pass_}"
    benchmark.extra_info.update(shape=str(shape), impl=cases.LABELS[impl], device=bench_device)
    warmup, rounds = bench_plan(shape)
    benchmark.pedantic(step, warmup_rounds=warmup, rounds=rounds, iterations=1)


@pytest.mark.parametrize("cell", cases.CELLS)
def test_same_math(bench_device, cell):
    """What is benchmarked side by side computes the same thing (shape S)."""
    shape = cases.SHAPES["S"]
    impls = cases.build_impls(cell, shape, bench_device)
    checks = cases.check_agreement(impls, cases.make_input(cell, shape, bench_device))
    assert checks, "nothing to compare"
    bad = [c for c in checks if not c[-1]]
    assert not bad, bad
