"""The C++ engine (csrc/scan/) as the runner of the loop part's forward: the program lowered
once per traced step (lower.py), run over all steps without Python where the tensors allow
(CPU, float32 or float64, a batch of at least one); otherwise the Python runner runs it."""

from typing import List, Optional

from torch import Tensor

from .lower import lower_loop

_state = {"enabled": True, "runs": 0}


def engine_runs() -> int:
    """How many loops the C++ engine has run since the process started (for tests)."""
    return _state["runs"]


def set_engine_enabled(enabled: bool) -> bool:
    """Turns the C++ engine on or off (off: every loop runs in Python); returns the old
    setting."""
    old, _state["enabled"] = _state["enabled"], bool(enabled)
    return old


class LoopEngine:
    """The loop part of a split step lowered for the C++ engine, or unusable (``engine`` None)
    where the lowering found something it has no opcode for."""

    def __init__(self, split):
        self.engine = None
        lowered = lower_loop(split)
        if lowered is None:
            return
        from .. import _C
        self.engine = _C.ScanEngine(*lowered)

    def forward(self, carry: List[Tensor], seqs: List[Tensor], weights: List[Tensor], T: int,
                mask: Optional[Tensor], reverse: bool, keep_states: bool):
        """forward_loop's result from the engine, or None where it cannot run these tensors."""
        if self.engine is None or not _state["enabled"] or carry[0].shape[0] == 0:
            return None
        tensors = [*carry, *seqs, *weights]
        dtype = carry[0].dtype
        if any(t.device.type != "cpu" or t.dtype != dtype for t in tensors):
            return None
        final, boundary, states = self.engine.forward(
            [c.detach() for c in carry], [s.detach() for s in seqs],
            [w.detach() for w in weights], mask, T, reverse, keep_states)
        _state["runs"] += 1
        return list(final), list(boundary), (list(states) if keep_states else None)
