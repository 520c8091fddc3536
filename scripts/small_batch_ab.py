"""Two builds of rnnfast at small batches (B = 1 to 7), where a step mostly reads the
recurrent weight, in alternating processes, beside torch.nn:

    python scripts/small_batch_ab.py BASE_CHECKOUT NEW_CHECKOUT [ROUNDS] [--json=PATH]

Each checkout must hold a built extension (as for scripts/ab_builds.py). GRU and LSTM,
H in 128, 256, 512, T = 50, I = 128, float32, forward without grad and forward+backward;
prints microseconds per step (each build's minimum over its processes) and the ratios.
"""

import json
import subprocess
import sys

CHILD = r"""
import sys, time, json, torch
sys.path.insert(0, sys.argv[1])
import rnnfast, rnnfast.functional as RF
assert rnnfast.__file__.startswith(sys.argv[1])
T, I = 50, 128
res = {}
for spec in sys.argv[2].split(";"):
    cell, H, B, p = spec.split(",")
    H, B = int(H), int(B)
    G = {"gru": 3, "lstm": 4, "rnn": 1}[cell]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, I, generator=g).requires_grad_()
    wi = (torch.randn(G*H, I, generator=g)*.1).requires_grad_()
    wh = (torch.randn(G*H, H, generator=g)*.1).requires_grad_()
    b = torch.randn(G*H, generator=g).requires_grad_()
    f = getattr(RF, cell)
    if sys.argv[3] == "nn":
        m = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM, "rnn": torch.nn.RNN}[cell](I, H)
        call = lambda: m(x)
        params = list(m.parameters())
    else:
        call = lambda: f(x, wi, wh, b, b)
        params = [wi, wh, b]
    if p == "fwd":
        def step():
            with torch.no_grad(): call()
        n = 40
    else:
        def step():
            call()[0].sum().backward()
        n = 10
    for _ in range(3): step()
    best = 1e9
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n): step()
        best = min(best, (time.perf_counter() - t0) / n)
    res[spec] = best / T * 1e6
print(json.dumps(res))
"""
SPECS = [
    f"{cell},{H},{B},{pass_}"
    for pass_ in ("fwd", "fwdbwd")
    for cell in ("gru", "lstm")
    for H in (128, 256, 512)
    for B in (1, 2, 3, 5, 7)
]


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--json")]
    json_path = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--json=")), None)
    base, new = args[0], args[1]
    rounds = int(args[2]) if len(args) > 2 else 3
    best = {k: {} for k in ("base", "new", "nn")}
    for r in range(rounds):
        for name, path, mode in (("base", base, "rf"), ("new", new, "rf"), ("nn", new, "nn")):
            if name == "nn" and r >= 2:  # torch.nn only as a reference: two processes
                continue
            out = subprocess.run(
                [sys.executable, "-c", CHILD, path, ";".join(SPECS), mode],
                capture_output=True,
                text=True,
                check=True,
            )
            for k, v in json.loads(out.stdout).items():
                best[name][k] = min(best[name].get(k, 1e9), v)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(best, f, indent=1)
    print(
        f"{'case (cell, H, B, pass)':26} {'base us':>8} {'new us':>8} {'new/base':>8} "
        f"{'torch.nn':>9} {'nn/new':>7}"
    )
    for s in SPECS:
        b, n, t = best["base"][s], best["new"][s], best["nn"][s]
        print(f"{s:26} {b:8.1f} {n:8.1f} {n / b:7.2f}x {t:9.1f} {t / n:6.2f}x")


if __name__ == "__main__":
    main()
