"""Fixtures that choose how rnnfast.scan splits a step: ``split_mode`` runs a test once with the
input products hoisted out of the loop and once with them inside it (what small calls use,
runner.INLINE_MACS); ``hoisted_split`` runs it hoisted only, for tests of that split's
programs."""

import pytest

from rnnfast._scan import runner


@pytest.fixture(params=["hoisted", "inline"])
def split_mode(request, monkeypatch):
    monkeypatch.setattr(runner, "INLINE_MACS", 0 if request.param == "hoisted" else 1 << 62)
    return request.param


@pytest.fixture
def hoisted_split(monkeypatch):
    monkeypatch.setattr(runner, "INLINE_MACS", 0)
