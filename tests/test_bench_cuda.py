"""rnnfast.bench_cuda, the GPU benchmark, run on the CPU (--device cpu) over a tiny grid: the
script itself, its implementations' agreement and its report, checked without a GPU."""

import json

import pytest

from rnnfast import bench_cuda


def test_runs_on_the_cpu_and_reports_every_case(tmp_path, capsys):
    bench_cuda.main(["--out", str(tmp_path), "--device", "cpu", "--batches", "2,3",
                     "--steps", "4", "--hidden", "5", "--repeat", "2"])
    report = json.loads((tmp_path / "bench_cuda.json").read_text())
    assert report["skipped"] == []
    timed = {(r["cell"], r["dtype"], r["pass_"], r["B"], r["impl"]) for r in report["results"]}
    for cell in ("rnn", "gru", "lstm"):
        impls = ["rnnfast", "torch_nn", "seed"] + (["rnnfast_rb"] if cell == "gru" else [])
        for dtype in ("float32", "bfloat16"):
            for pass_ in ("fwd", "fwdbwd"):
                for B in (2, 3):
                    for impl in impls:
                        assert (cell, dtype, pass_, B, impl) in timed
    assert all(r["ms"] > 0 and len(r["runs_ms"]) == (1 if r["impl"] == "seed" else 2)
               for r in report["results"])
    # Every baseline computes what rnnfast's cell of the same math computes.
    assert len(report["agreement"]) == 6
    for case, diffs in report["agreement"].items():
        assert set(diffs) >= {"rnnfast vs torch_nn"} and any("seed" in k for k in diffs)
        limit = 1e-5 if "float32" in case else 2e-2
        assert all(d < limit for d in diffs.values()), (case, diffs)
    text = (tmp_path / "bench_cuda.txt").read_text()
    assert text.count("\nrnn ") + text.count("\ngru ") + text.count("\nlstm ") == 24
    assert text in capsys.readouterr().out


TINY = ["--device", "cpu", "--batches", "2,3", "--steps", "4", "--hidden", "5",
        "--repeat", "1"]


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


def test_an_error_in_one_implementation_is_recorded_and_the_rest_measured(tmp_path,
                                                                          monkeypatch):
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
    _failing(monkeypatch, "rnnfast", RuntimeError("CUDA error: an illegal memory access"),
             after_calls=4)
    bench_cuda.main(["--out", str(tmp_path)] + TINY)
    report = json.loads((tmp_path / "bench_cuda.json").read_text())
    assert report["stopped"].startswith("a CUDA error in rnnfast")
    assert report["results"], "what came before the error is kept"
    last = report["results"][-1]
    assert report["skipped"] and all(
        s["why"] == report["stopped"] or s["why"].startswith("RuntimeError: CUDA error")
        for s in report["skipped"])
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
