"""How the extension was built, where that decides what it does at run time."""

import os
import sys

import pytest
import torch

import rnnfast

from conftest import extension_calls_openmp


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not torch.backends.openmp.is_available(),
    reason="torch runs no OpenMP loops here",
)
@pytest.mark.skipif(os.environ.get("RNNFAST_OPENMP") == "0", reason="built with RNNFAST_OPENMP=0")
def test_parallel_loops_run_on_threads():
    """at::parallel_for is a header template: compiled without -fopenmp it runs every loop of
    the extension on the calling thread, silently. Built with it, the extension calls into
    the OpenMP runtime."""
    assert extension_calls_openmp(), (
        f"{rnnfast._C.__file__} has no OpenMP entry: its at::parallel_for loops run serially "
        "(rebuild with setup.py, which adds -fopenmp where torch uses OpenMP)"
    )
