"""Compare two builds of rnnfast on the benchmark cases, in alternating processes.

    python scripts/ab_builds.py BASE_CHECKOUT NEW_CHECKOUT gru:M:fwdbwd rnn:L:fwdbwd \
        [--rounds 4] [--runs 5] [--base-env NAME=VALUE] [--new-env NAME=VALUE]

Each checkout must hold a built extension (``python setup.py build_ext --inplace``; for the
base, for instance, ``git worktree add /tmp/base HEAD~1`` and build there). Per round and
case, one process per build times rnnfast alone on the case of ``rnnfast/bench/cases.py``
(the same inputs, weights and loss as ``python -m rnnfast.bench``) and reports its fastest
run; the builds alternate, so that the slower and faster spells of a shared machine touch
both alike. The table gives each build's minimum over the rounds and their ratio: on a
noisy machine, minima over alternating processes are what tell a change from the noise.
With the same checkout twice and ``--base-env``/``--new-env``, it compares one build under
two settings, e.g. ``--base-env RNNFAST_CPU_STEP_GEMM=blas --new-env
RNNFAST_CPU_STEP_GEMM=panels``.
"""

import argparse
import json
import os
import subprocess
import sys
import time

_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import rnnfast
from rnnfast.bench import cases as C
assert rnnfast.__file__.startswith(sys.argv[1]), rnnfast.__file__
cell, shape, pass_ = sys.argv[2].split(":")
runs = int(sys.argv[3])
impls = C.build_impls(cell, C.SHAPES[shape], names=["rnnfast"])
x = C.make_input(cell, C.SHAPES[shape])
step = C.make_step(impls["rnnfast"], x, pass_)
for _ in range(2):
    step()
times = []
for _ in range(runs):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
print(json.dumps(min(times) * 1e3))
"""


def fastest_run_ms(checkout: str, case: str, runs: int, env: dict) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, checkout, case, str(runs)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", help="checkout of the base build")
    p.add_argument("new", help="checkout of the new build")
    p.add_argument("cases", nargs="+", help="cell:shape:pass, e.g. gru:M:fwdbwd")
    p.add_argument("--rounds", type=int, default=4, help="processes per build and case")
    p.add_argument("--runs", type=int, default=5, help="timed runs per process")
    p.add_argument(
        "--base-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment variable for the base processes (repeatable); with the "
        "same checkout twice, compares one build under two settings",
    )
    p.add_argument(
        "--new-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment variable for the new processes (repeatable)",
    )
    args = p.parse_args(argv)
    envs = {}
    for name, pairs in (("base", args.base_env), ("new", args.new_env)):
        bad = [pair for pair in pairs if "=" not in pair]
        if bad:
            p.error(f"--{name}-env expects NAME=VALUE, got {bad[0]!r}")
        envs[name] = dict(pair.split("=", 1) for pair in pairs)
    checkouts = {"base": os.path.abspath(args.base), "new": os.path.abspath(args.new)}
    for name, path in checkouts.items():
        if not os.path.isdir(os.path.join(path, "rnnfast")):
            p.error(f"{name} checkout {path} holds no rnnfast package")

    start = time.time()
    print(
        f"{'case':<16} {'base ms (per round)':<34} {'new ms (per round)':<34} "
        f"{'base min':>9} {'new min':>9} {'new/base':>9}"
    )
    for case in args.cases:
        mins = {"base": [], "new": []}
        for _ in range(args.rounds):
            for name in ("base", "new"):
                mins[name].append(fastest_run_ms(checkouts[name], case, args.runs, envs[name]))
        base, new = min(mins["base"]), min(mins["new"])
        rounds = {k: " ".join(f"{v:.4g}" for v in vs) for k, vs in mins.items()}
        print(
            f"{case:<16} {rounds['base']:<34} {rounds['new']:<34} {base:>9.4g} {new:>9.4g} "
            f"{new / base:>8.3f}x",
            flush=True,
        )
    print(
        f"({args.rounds} alternating processes per build and case, fastest of {args.runs} "
        f"runs each; {time.time() - start:.0f} s)"
    )


if __name__ == "__main__":
    main()
