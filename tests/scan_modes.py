"""How rnnfast.scan runs a step, for the tests: the fixtures ``split_mode`` (a test once with
the input products hoisted out of the loop and once with them inside it, what small calls use,
runner.INLINE_MACS) and ``hoisted_split`` (hoisted only, for tests of that split's programs),
and ``engine(enabled)``, which turns the C++ engine on or off for a block."""

import contextlib

import pytest

from rnnfast._scan import runner
from rnnfast._scan.engine import set_engine_enabled


@contextlib.contextmanager
def engine(enabled):
    old = set_engine_enabled(enabled)
    try:
        yield
    finally:
        set_engine_enabled(old)


@pytest.fixture(params=["hoisted", "inline"])
def split_mode(request, monkeypatch):
    monkeypatch.setattr(runner, "INLINE_MACS", 0 if request.param == "hoisted" else 1 << 62)
    return request.param


@pytest.fixture
def hoisted_split(monkeypatch):
    monkeypatch.setattr(runner, "INLINE_MACS", 0)
