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


@pytest.mark.parametrize("value", ["", "8,x", "0", "-1,4"])
def test_bad_sizes_are_named(value, capsys):
    with pytest.raises(SystemExit):
        bench_cuda.parse_args(["--out", "x", "--batches", value])
    assert "--batches" in capsys.readouterr().err
