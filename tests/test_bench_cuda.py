"""rnnfast.bench.cuda, the GPU benchmark, run on the CPU (--device cpu) over a tiny grid: the
script itself, its implementations' agreement and its report, checked without a GPU."""

import json

import pytest
import torch

from rnnfast.bench import cuda as bench_cuda

from cuda_helpers import requires_cuda


def test_runs_on_the_cpu_and_reports_every_case(tmp_path, capsys):
    bench_cuda.main(
        [
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
            "--batches",
            "2,3",
            "--steps",
            "4",
            "--hidden",
            "5",
            "--repeat",
            "2",
        ]
    )
    report = json.loads((tmp_path / "bench_cuda.json").read_text())
    assert report["skipped"] == []
    timed = {(r["cell"], r["dtype"], r["pass_"], r["B"], r["impl"]) for r in report["results"]}
    for cell in ("rnn", "gru", "lstm"):
        impls = ["rnnfast", "torch_nn", "seed", "gemm_floor"] + (
            ["rnnfast_rb"] if cell == "gru" else []
        )
        for dtype in ("float32", "bfloat16"):
            for pass_ in ("fwd", "fwdbwd"):
                for B in (2, 3):
                    for impl in impls:
                        assert (cell, dtype, pass_, B, impl) in timed
    assert all(
        r["ms"] > 0 and len(r["runs_ms"]) == (1 if r["impl"] == "seed" else 2)
        for r in report["results"]
    )
    # Every baseline computes what rnnfast's cell of the same math computes.
    assert len(report["agreement"]) == 6
    for case, diffs in report["agreement"].items():
        assert set(diffs) >= {"rnnfast vs torch_nn"} and any("seed" in k for k in diffs)
        limit = 1e-5 if "float32" in case else 2e-2
        assert all(d < limit for d in diffs.values()), (case, diffs)
    text = (tmp_path / "bench_cuda.txt").read_text()
    assert text.count("\nrnn ") + text.count("\ngru ") + text.count("\nlstm ") == 24
    assert text in capsys.readouterr().out
    # The floor's GEMM count and its ratios, row by row.
    ms = {(r["cell"], r["dtype"], r["pass_"], r["B"], r["impl"]): r for r in report["results"]}
    rows = bench_cuda.speedups(report)
    assert len(rows) == 24
    for row in rows:
        key = (row["cell"], row["dtype"], row["pass_"], row["B"])
        floor = ms[key + ("gemm_floor",)]
        G = {"rnn": 1, "gru": 3, "lstm": 4}[row["cell"]]
        forward_gflop = 2 * 4 * row["B"] * G * 5 * (5 + 5) / 1e9
        assert floor["gemm_gflop"] == pytest.approx(
            forward_gflop * (3 if row["pass_"] == "fwdbwd" else 1)
        )
        assert row["floor_ms"] == floor["ms"]
        seed = ms[key + ("seed",)]["ms"]
        assert row["seed_over_floor"] == pytest.approx(seed / floor["ms"])
        assert row["cudnn_over_floor"] == pytest.approx(ms[key + ("torch_nn",)]["ms"] / floor["ms"])


def _bounds_report(seed_ms, floor_ms):
    """A report of one case with the given seed and floor times (rnnfast 1 ms, cuDNN 1 ms)."""
    case = dict(cell="rnn", dtype="float32", pass_="fwd", B=64, T=100, H=128)
    results = [
        dict(case, impl=impl, ms=ms, runs_ms=[ms])
        for impl, ms in (
            ("rnnfast", 1.0),
            ("torch_nn", 1.0),
            ("seed", seed_ms),
            ("gemm_floor", floor_ms),
        )
    ]
    return dict(
        machine=dict(device="GPU", torch="x", cudnn=1),
        results=results,
        skipped=[],
        agreement={},
        seconds=1.0,
        stopped=None,
    )


@pytest.mark.parametrize(
    "seed_ms, floor_ms, misses, out_of_reach, mark",
    [(25.0, 1.0, 0, 0, " "), (15.0, 0.5, 1, 0, " "), (15.0, 1.0, 1, 1, "<")],
)
def test_the_table_tells_misses_within_reach_from_those_beyond_the_floor(
    seed_ms, floor_ms, misses, out_of_reach, mark
):
    text = bench_cuda.table(_bounds_report(seed_ms, floor_ms))
    row = next(line for line in text.splitlines() if line.startswith("rnn "))
    assert row.split()[-2] == f"{seed_ms / floor_ms:.2f}{mark}".strip()
    assert f"target misses: {misses} (of the hand-loop ones, {out_of_reach} out of reach" in text


def test_the_floor_runs_the_cases_gemms():
    """gemm_floor_step's GEMMs are the case's: on the CPU here, replayed from a CUDA graph on a
    GPU (test_cuda_runtime checks that)."""
    from rnnfast.bench import cases

    shape = cases.Shape("g", 3, 4, 5, 6, warmup=1, repeat=1)
    step = cases.gemm_floor_step("gru", shape, "fwdbwd", "cpu")
    step()
    check_floor_gemms(step.tensors)


@requires_cuda
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)], ids=str)
def test_the_floor_replays_the_cases_gemms_from_a_cuda_graph(dtype, atol):
    from rnnfast.bench import cases

    shape = cases.Shape("g", 3, 4, 5, 6, warmup=1, repeat=1)
    step = cases.gemm_floor_step("lstm", shape, "fwdbwd", "cuda", dtype)
    outputs = [step.tensors[k] for k in ("x_proj", "rec", "dx", "dh", "dw_ih", "dw_hh")]
    for o in outputs:
        o.fill_(float("nan"))  # what capture left there; the replay must write it all anew
    step()
    check_floor_gemms({k: v.double() for k, v in step.tensors.items()}, atol)


def check_floor_gemms(t, atol=1e-5):
    """The outputs of gemm_floor_step's tensors against the products they stand for."""

    def close(a, b):
        torch.testing.assert_close(a, b, atol=atol, rtol=atol)

    close(t["x_proj"], t["x"] @ t["w_ih"].t())
    close(t["rec"], t["h_all"] @ t["w_hh"].t())
    close(t["dh"], t["d_gates"] @ t["w_hh"])
    dg = t["d_gates"].flatten(0, 1)
    close(t["dx"], dg @ t["w_ih"])
    close(t["dw_ih"], dg.t() @ t["x"])
    close(t["dw_hh"], dg.t() @ t["h_all"].flatten(0, 1))


TINY = ["--device", "cpu", "--batches", "2,3", "--steps", "4", "--hidden", "5", "--repeat", "1"]


def _failing(monkeypatch, impl, error, after_calls=0):
    """make_impls whose `impl` raises `error` from its forward after `after_calls` calls."""
    make_impls = bench_cuda.make_impls
    calls = [0]

    def patched(*args, **kwargs):
        impls = make_impls(*args, **kwargs)
        forward, params, math = impls[impl]

        def failing_forward(x):
            calls[0] += 1
            if calls[0] > after_calls:
                raise error
            return forward(x)

        impls[impl] = (failing_forward, params, math)
        return impls

    monkeypatch.setattr(bench_cuda, "make_impls", patched)


def test_an_error_in_one_implementation_is_recorded_and_the_rest_measured(tmp_path, monkeypatch):
    _failing(monkeypatch, "torch_nn", RuntimeError("cuDNN refused\nsecond line"))
    bench_cuda.main(["--out", str(tmp_path)] + TINY)
    report = json.loads((tmp_path / "bench_cuda.json").read_text())
    assert report["stopped"] is None
    assert {r["impl"] for r in report["results"]} >= {"rnnfast", "seed"}
    assert not any(r["impl"] == "torch_nn" for r in report["results"])
    whys = {s["why"] for s in report["skipped"]}
    assert whys == {"RuntimeError: cuDNN refused"}
    assert len(report["skipped"]) == 3 * 2 * 2 * 2  # cells x dtypes x batches x passes
    assert "failed: " in (tmp_path / "bench_cuda.txt").read_text()


def test_a_cuda_error_stops_the_run_and_keeps_what_was_measured(tmp_path, monkeypatch):
    _failing(
        monkeypatch, "rnnfast", RuntimeError("CUDA error: an illegal memory access"), after_calls=4
    )
    bench_cuda.main(["--out", str(tmp_path)] + TINY)
    report = json.loads((tmp_path / "bench_cuda.json").read_text())
    assert report["stopped"].startswith("a CUDA error in rnnfast")
    assert report["results"], "what came before the error is kept"
    last = report["results"][-1]
    assert report["skipped"] and all(
        s["why"] == report["stopped"] or s["why"].startswith("RuntimeError: CUDA error")
        for s in report["skipped"]
    )
    assert "STOPPED early" in (tmp_path / "bench_cuda.txt").read_text()
    assert (last["cell"], last["dtype"]) == ("rnn", "float32")


def test_an_interruption_leaves_the_cases_measured_so_far(tmp_path, monkeypatch):
    _failing(monkeypatch, "seed", KeyboardInterrupt(), after_calls=2)
    report = bench_cuda.main(["--out", str(tmp_path)] + TINY)
    assert report["stopped"].startswith("interrupted")
    on_disk = json.loads((tmp_path / "bench_cuda.json").read_text())
    assert on_disk["stopped"] == report["stopped"]
    assert on_disk["results"] == report["results"] and report["results"]
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize("value", ["", "8,x", "0", "-1,4"])
def test_bad_sizes_are_named(value, capsys):
    with pytest.raises(SystemExit):
        bench_cuda.parse_args(["--out", "x", "--batches", value])
    assert "--batches" in capsys.readouterr().err


def test_short_sequences_of_every_cell_and_dtype_come_first(tmp_path):
    """A run cut short by its budget has the short sequences of the whole grid."""
    report = bench_cuda.main(
        [
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
            "--batches",
            "2",
            "--steps",
            "3,5",
            "--hidden",
            "4",
            "--repeat",
            "1",
        ]
    )
    steps = [r["T"] for r in report["results"]]
    assert steps.index(5) == len(steps) - steps[::-1].index(3)  # every T = 3 before any T = 5
    first = {(r["cell"], r["dtype"]) for r in report["results"] if r["T"] == 3}
    assert first == {(c, d) for c in ("rnn", "gru", "lstm") for d in ("float32", "bfloat16")}
