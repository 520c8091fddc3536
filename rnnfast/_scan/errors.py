"""The exceptions of rnnfast.scan, of the types torch.scan raises for the same mistakes."""

import os
import re

from torch._dynamo.exc import UncapturedHigherOrderOpError

_OWN_DIR = os.path.dirname(os.path.abspath(__file__))
_TORCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__import__("torch").__file__)))


class ScanTraceError(UncapturedHigherOrderOpError):
    """combine_fn cannot be traced, or uses an op the fused engine cannot run: a RuntimeError,
    of the type torch.scan raises for a step it cannot capture."""


class CarryMismatchError(UncapturedHigherOrderOpError):
    """combine_fn's next carry differs from init in structure, shape or dtype (torch.scan raises
    UncapturedHigherOrderOpError for it too)."""


def user_line(stack_trace) -> str:
    """The first frame of a traced node's stack trace that is the user's code (neither torch's
    nor this package's): torch.fx records it innermost first, from the step's frame out. As
    'file:line: code'; '' where none is recorded."""
    if not stack_trace:
        return ""
    lines = stack_trace.strip().splitlines()
    for i, line in enumerate(lines):
        text = line.strip()
        if not text.startswith("File "):
            continue
        path = text.split('"')[1] if '"' in text else ""
        if path.startswith(_OWN_DIR) or path.startswith(_TORCH_DIR + os.sep + "torch"):
            continue
        code = lines[i + 1].strip() if i + 1 < len(lines) else ""
        m = re.match(r'File "(.*)", line (\d+)', text)
        where = f"{m.group(1)}:{m.group(2)}" if m else text[5:]
        return f"{where}: {code}" if code and not code.startswith("File ") else where
    return ""
