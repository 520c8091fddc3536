"""scripts/gpu-check's plumbing, without a GPU: the script runs against a stand-in python3 and
compute-sanitizer that only record what they were asked and answer as told. What a GPU
session gets from its scarce minutes depends on this script working the first time: the
files it names must exist, every step must leave its outcome, and OUT_DIR must hold its six
files whether the run passes, fails or is stopped."""

import importlib.util
import json
import os
import shlex
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check"
OUT_FILES = sorted(
    [
        "summary.txt",
        "gpu-check.log",
        "gpu-check.json",
        "bench_cuda.json",
        "bench_cuda.txt",
        "details.tar.gz",
    ]
)
STEPS = {"build", "import", "tests-cuda", "memcheck", "racecheck", "initcheck", "bench"}

FAKE_PYTHON = r"""#!/usr/bin/env bash
# Records its arguments, one line each call; answers as FAKE_* say.
printf '%s\n' "$*" >> "$FAKE_LOG"
case "$*" in
  *"-m pip install"*) sleep "${FAKE_BUILD_SLEEP:-0}"; echo "Successfully installed rnnfast"
                      exit "${FAKE_BUILD_RC:-0}" ;;
  *"import os, nvidia"*|*"import pytest_timeout"*) exit 1 ;;
  *"-m pytest"*)
    for a in "$@"; do
      case $a in --junitxml=*) echo '<testsuites/>' > "${a#--junitxml=}" ;; esac
    done
    if [ "${FAKE_TESTS_RC:-0}" = 0 ]; then echo "12 passed in 1.00s"
    else echo "FAILED tests/test_cuda.py::test_x - boom"; echo "1 failed, 11 passed in 1.00s"; fi
    exit "${FAKE_TESTS_RC:-0}" ;;
  *"-m rnnfast.bench.cuda"*)
    out=""; prev=""
    for a in "$@"; do [ "$prev" = --out ] && out=$a; prev=$a; done
    echo '{"cases": []}' > "$out/bench_cuda.json"; echo "the table" > "$out/bench_cuda.txt" ;;
esac
exit 0
"""

FAKE_SANITIZER = r"""#!/usr/bin/env bash
printf 'sanitizer %s\n' "$*" >> "$FAKE_LOG"
echo "========= ERROR SUMMARY: 0 errors"
"""


@pytest.fixture
def fakes(tmp_path):
    python = tmp_path / "python3"
    python.write_text(FAKE_PYTHON)
    cuda_home = tmp_path / "cuda"
    (cuda_home / "bin").mkdir(parents=True)
    sanitizer = cuda_home / "bin" / "compute-sanitizer"
    sanitizer.write_text(FAKE_SANITIZER)
    for f in (python, sanitizer):
        f.chmod(0o755)
    log = tmp_path / "calls.log"
    env = dict(os.environ, PYTHON=str(python), CUDA_HOME=str(cuda_home), FAKE_LOG=str(log))
    return tmp_path, env, log


def start(env, out, **fake):
    return subprocess.Popen(
        [str(SCRIPT), str(out)],
        env=dict(env, **fake),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


# How long the stopped runs' builds would take: durations no other process on the machine is
# likely to sleep for, so that pgrep finds only what gpu-check left behind.
BUILD_SECONDS = ("60.37", "61.37")


def running(command):
    return subprocess.run(["pgrep", "-f", command], capture_output=True).returncode == 0


def start_in_the_build(env, out, log, seconds):
    """gpu-check, once its build (which then takes `seconds`) has started."""
    proc = start(env, out, FAKE_BUILD_SLEEP=str(seconds))
    deadline = time.monotonic() + 60
    while not (log.exists() and "pip install" in log.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None, "the build never started"
        time.sleep(0.1)
    return proc


def steps_of(out):
    report = json.loads((out / "gpu-check.json").read_text())
    return {s["step"]: s for s in report["steps"]}


def test_all_steps_pass(fakes):
    tmp, env, log = fakes
    out = tmp / "out"
    proc = start(env, out)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, text
    assert sorted(os.listdir(out)) == OUT_FILES
    steps = steps_of(out)
    assert set(steps) == STEPS
    assert all(s["status"] == "ok" for s in steps.values()), steps
    assert (out / "summary.txt").read_text().startswith("gpu-check: all steps ok")
    assert "the table" in (out / "summary.txt").read_text()
    with tarfile.open(out / "details.tar.gz") as archive:
        names = set(archive.getnames())
    assert {f"logs/{s}.log" for s in STEPS} <= names and "tests-cuda.xml" in names

    calls = [shlex.split(line) for line in log.read_text().splitlines()]
    # The build is the editable install the device notes ask for.
    build = next(c for c in calls if c[:3] == ["-m", "pip", "install"])
    assert {"--no-build-isolation", "--no-deps", "-e", "."} <= set(build)
    # Every file and module the script names exists (a renamed test file would otherwise
    # leave a GPU session with an error instead of results).
    pytest_call = next(c for c in calls if c[:2] == ["-m", "pytest"])
    test_files = [a for a in pytest_call if a.startswith("tests/")]
    assert test_files and all((ROOT / f).is_file() for f in test_files), test_files
    sanitized = [c for c in calls if c[0] == "sanitizer"]
    assert {c[c.index("--tool") + 1] for c in sanitized} == {"memcheck", "racecheck", "initcheck"}
    assert all((ROOT / c[-1]).is_file() for c in sanitized)
    bench = next(c for c in calls if c[:2] == ["-m", "rnnfast.bench.cuda"])
    assert importlib.util.find_spec(bench[1]) is not None


def test_a_failing_step_fails_the_run_and_is_named(fakes):
    tmp, env, _ = fakes
    out = tmp / "out"
    proc = start(env, out, FAKE_TESTS_RC="1")
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, text
    assert sorted(os.listdir(out)) == OUT_FILES
    assert steps_of(out)["tests-cuda"]["status"] == "failed"
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("gpu-check: SOME STEPS FAILED")
    assert "FAILED tests/test_cuda.py::test_x" in summary


def test_stopped_run_leaves_its_files(fakes):
    """As when the device tool's time limit stops it in the build: a SIGTERM to the whole
    process group."""
    tmp, env, log = fakes
    out = tmp / "out"
    proc = start_in_the_build(env, out, log, seconds=BUILD_SECONDS[0])
    stopped_at = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    text, _ = proc.communicate(timeout=60)
    # At once: not after the build's 60 s, which `timeout` runs in a process group of its own.
    assert time.monotonic() - stopped_at < 20, text
    assert proc.returncode != 0, text
    assert {"summary.txt", "gpu-check.json", "gpu-check.log", "details.tar.gz"} <= set(
        os.listdir(out)
    )
    steps = steps_of(out)
    assert steps["gpu-check"]["status"] == "interrupted"
    assert "bench" not in steps
    # The build's command was stopped too, not left running behind the script.
    assert not running(f"sleep {BUILD_SECONDS[0]}")


def test_stopped_script_stops_its_steps(fakes):
    """A SIGTERM to the script alone (kill PID): it stops the steps under way and says so."""
    tmp, env, log = fakes
    out = tmp / "out"
    proc = start_in_the_build(env, out, log, seconds=BUILD_SECONDS[1])
    stopped_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=60)
    assert time.monotonic() - stopped_at < 20, text
    assert proc.returncode == 143, text
    assert steps_of(out)["gpu-check"]["status"] == "interrupted"
    assert not running(f"sleep {BUILD_SECONDS[1]}")
