"""The benchmark's three modes: what each runs by default and about how long it takes.

``--shapes``, ``--cells`` and ``--passes`` override a mode's grid; its repetitions and
module groups stay."""

from __future__ import annotations

from dataclasses import dataclass

from . import cases, modules


@dataclass(frozen=True)
class Mode:
    name: str
    shapes: tuple[str, ...]
    module_groups: tuple[str, ...]
    quick_plan: bool  # every case timed with cases.QUICK_PLAN instead of its shape's plan
    duration: str  # what --help and the start line promise, on a 2-core CPU


PASSES = ("fwd", "fwdbwd")
MODES = {
    m.name: m
    for m in (
        Mode(
            "quick",
            ("S",),
            modules.QUICK_GROUPS,
            quick_plan=True,
            duration="seconds on an idle machine, under 30 on a busy one",
        ),
        # Up to M: at L the hand-written loops take most of a full run.
        Mode(
            "default",
            ("S", "B1", "LM", "M"),
            modules.QUICK_GROUPS,
            quick_plan=False,
            duration="under a minute on an idle machine, about 3 on a busy one",
        ),
        Mode(
            "full",
            tuple(cases.SHAPES),
            modules.GROUPS,
            quick_plan=False,
            duration="5 minutes on an idle machine, up to 30 on a busy one",
        ),
    )
}


def describe() -> str:
    """The modes for --help's epilog."""
    lines = ["modes (on a 2-core CPU; more cores or a GPU are faster):"]
    for m in MODES.values():
        flag = "(no flag)" if m.name == "default" else f"--{m.name}"
        lines.append(
            f"  {flag:10s} shapes {','.join(m.shapes)}, passes {','.join(PASSES)}, "
            f"layer/cell groups {','.join(m.module_groups)}: {m.duration}"
        )
    return "\n".join(lines)
