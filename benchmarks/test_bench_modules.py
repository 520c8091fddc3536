"""Module-level benchmarks: rnnfast's layers and cells against torch.nn's (and, for generation,
the hand-written step). One pytest-benchmark group per "{group}-{cell}-{pass}"; the cases
are defined in ``rnnfast.bench.modules`` and shared with ``python -m rnnfast.bench``."""

import pytest

from rnnfast.bench import modules


def _params():
    for case in modules.cases():
        # Quick mode (see conftest.py) keeps the cases whose "shape" is S.
        shape = "S" if case.group in modules.QUICK_GROUPS else case.group
        yield pytest.param(case, shape, id=case.name)


@pytest.mark.parametrize(("case", "shape"), list(_params()))
def test_module(benchmark, bench_device, bench_plan, case, shape):
    step = modules.make_step(case, bench_device)
    benchmark.group = f"{case.group}-{case.cell}-{case.pass_}"
    benchmark.extra_info.update(impl=modules.LABELS[case.impl], device=bench_device)
    warmup, rounds = bench_plan(modules.PLANS[case.group])
    benchmark.pedantic(step, warmup_rounds=warmup, rounds=rounds, iterations=1)
