"""How the benchmark measures: times in rounds, peak memory, the bytes autograd saves, the
machine's other load while a case ran, and the machine's description."""

from __future__ import annotations

import ctypes
import datetime
import gc
import os
import platform
import time

import torch

from .. import __version__, empty_cpu_cache
from . import cases

MAX_OTHER_LOAD = 0.05  # share of CPU time taken by other processes that spoils timings


def time_ms(step, warmup: int, repeat: int) -> list[float]:
    """Run ``step`` ``warmup`` times, then return the times of ``repeat`` runs (ms)."""
    return time_rounds({None: step}, warmup, repeat)[None]


def time_rounds(steps: dict, warmup: int, repeat: int) -> dict:
    """The times (ms) of ``repeat`` runs of each of ``steps``, taken in rounds of one run of
    each, after ``warmup`` untimed rounds."""
    times = {name: [] for name in steps}
    for round_ in range(warmup + repeat):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if round_ >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _release_free_memory():
    gc.collect()
    empty_cpu_cache()  # so rnnfast's reused scratch counts in the peak, as if new
    try:  # hand freed heap pages back to the OS so they count again when reused
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_bytes(step, device) -> int | None:
    """Peak memory of one ``step`` above the level before it (None where unsupported)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        return torch.cuda.max_memory_allocated() - base
    _release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        base = _proc_status_kib("VmRSS")
        step()
        return (_proc_status_kib("VmHWM") - base) * 1024
    except OSError:
        return None


def _storage_key(t: torch.Tensor):
    try:
        s = t.untyped_storage()
        return (t.device, s.data_ptr()), s.nbytes()
    except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. opaque)
        return (t.device, id(t)), t.numel() * t.element_size()


def saved_bytes(impl: cases.Impl, x: torch.Tensor) -> int:
    """Bytes of the unique storages autograd saves for backward in one forward,
    the input's and the parameters' not counted."""
    exclude = {_storage_key(t)[0] for t in (x, *impl.params)}
    seen = {}

    def pack(t):
        key, nbytes = _storage_key(t)
        if key not in exclude:
            seen[key] = nbytes
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = impl.forward(x)
    del y
    return sum(seen.values())


class OtherLoad:
    """Share of the machine's CPU time that other processes used while it was open
    (Linux): on a small machine anything above a few percent spoils the timings."""

    def __enter__(self):
        self._start = self._sample()
        return self

    def __exit__(self, *exc):
        busy, total, own = (b - a for a, b in zip(self._start, self._sample()))
        self.fraction = max(0.0, (busy - own) / total) if total else None

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                ticks = [int(v) for v in f.readline().split()[1:9]]
        except OSError:
            return 0, 0, 0
        own = os.times()
        own_ticks = (own.user + own.system) * os.sysconf("SC_CLK_TCK")
        return sum(ticks) - ticks[3] - ticks[4], sum(ticks), own_ticks  # minus idle, iowait


def machine_info(device) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    dev = torch.device(device)
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if dev.type == "cuda":
        info["cuda"] = torch.version.cuda
    info["rnnfast"] = __version__
    return info
