"""The traced programs by step code and input signature, never by batch size or length: a
lambda made anew on every call hits its entry, and new tensors behind its closure are rebound
(they are the program's inputs), while a change to what the trace baked in (a Python scalar in
the closure, a tensor's shape or dtype, which tensors need grad) traces again. Per step code
the shortcuts (shortcut.py) of its last few plans are kept here too."""

from collections import OrderedDict
from typing import Callable

from .. import _C
from .trees import spec_key

_MAX_ENTRIES = 256
_entries: "OrderedDict[tuple, object]" = OrderedDict()
_traces = 0


def trace_count() -> int:
    """How many times rnnfast.scan has traced a step since the process started."""
    return _traces


def clear_cache() -> None:
    _entries.clear()
    shortcuts_by_code.clear()


# Per step code, the shortcuts (shortcut.py) of its last calls that went the whole way, the
# latest first: a few, for a step made with different shapes (the layers of a stack). Read
# by every call (api.py), which looks it up itself: ``shortcuts_by_code.get(code, ())``.
shortcuts_by_code: dict = {}
_SHORTCUTS_PER_CODE = 4


def used(entry) -> None:
    """Marks a shortcut's entry as used most recently (for the eviction order)."""
    try:
        _entries.move_to_end(entry.key)
    except KeyError:  # evicted meanwhile: kept again, as the shortcut holds it anyway
        _keep(entry.key, entry.plan)


def add_shortcut(code, entry) -> None:
    """Keeps entry (a Shortcut; None: nothing) for the next calls of code."""
    if entry is None:
        return
    kept = [s for s in shortcuts_by_code.pop(code, ()) if s.key != entry.key]
    shortcuts_by_code[code] = (entry, *kept[: _SHORTCUTS_PER_CODE - 1])
    if len(shortcuts_by_code) > _MAX_ENTRIES:
        del shortcuts_by_code[next(iter(shortcuts_by_code))]


def signature(lifted, init_leaves, init_spec, x_leaves, x_spec) -> tuple:
    """What the trace depends on in the step's lifted tensors, init and xs: structure, and per
    tensor its dtype, device, requires_grad and sizes, but for init's batch (init [B, ...]) and
    xs' steps and batch (xs [T, B, ...])."""
    tensors = _C.scan_tensors_key(lifted, init_leaves, x_leaves)
    if tensors is None:  # a tensor subclass, fake or symbolic sizes: described here
        tensors = (
            tuple([(t.dtype, t.shape, t.device, t.requires_grad) for t in lifted]),
            tuple([(t.dtype, t.shape[1:], t.device, t.requires_grad) for t in init_leaves]),
            tuple([(t.dtype, t.shape[2:], t.device, t.requires_grad) for t in x_leaves]),
        )
    return (spec_key(init_spec), spec_key(x_spec), tensors)


def lookup(key: tuple, build: Callable[[], object]):
    """The entry for key, built (traced) on a miss. A build that raises is remembered as that
    error, so that a step the engine cannot run is not traced again on every call."""
    global _traces
    entry = _entries.get(key)
    if entry is None:
        _traces += 1
        try:
            entry = build()
        except Exception as e:  # kept: the step's code and signature fail the same way again
            entry = _Failure(e)
        _keep(key, entry)
    else:
        _entries.move_to_end(key)
    if isinstance(entry, _Failure):
        raise entry.error
    return entry


def _keep(key: tuple, entry) -> None:
    _entries[key] = entry
    if len(_entries) > _MAX_ENTRIES:
        _entries.popitem(last=False)


class _Failure:
    def __init__(self, error: Exception):
        self.error = error
