"""rnnfast.scan: any hand-written recurrent step, traced once and run split into its hoisted
input products, its recurrent core and its output part, with autograd.

``rnnfast.scan`` is the function (loaded on first use: it imports torch._dynamo, about a
second); this subpackage's other names are reached by ``from rnnfast._scan import trace_count,
clear_cache``.

Module layout: api (the entry), validate (argument checks), capture (closure lifting), trace
(make_fx into the IR), ir and whitelist (the program and the ops the engine runs), rewrite and
split (cat-product split, the parts), interpret, loop_step, recurrence and runner (the reference
runner and its autograd), engine, lower, lower_ops, lower_vjp and opcodes (the C++ engine's
programs), cache (programs by code and signature), shortcut (the usual call past the checks,
capture and cache), loop (the eager fallback and functorch's transforms), errors."""

from .api import scan
from .cache import clear_cache, trace_count
from .errors import CarryMismatchError, ScanTraceError

__all__ = ["scan", "trace_count", "clear_cache", "ScanTraceError", "CarryMismatchError"]
