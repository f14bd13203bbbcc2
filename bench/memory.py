"""Peak memory one call allocates beyond what was live before it.

CUDA: torch.cuda.max_memory_allocated. CPU: torch.profiler's allocation
events (profile_memory=True) replayed in time order; it sees what goes
through PyTorch's CPU allocator (tensors, oneDNN buffers requested through
ATen), not scratch a library mallocs itself.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

import torch


@contextlib.contextmanager
def _quiet_stderr():
    """Kineto prints start/stop lines straight to fd 2; keep the table clean."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak(fn) -> int | None:
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    try:
        events = prof.profiler.kineto_results.events()
        mem = sorted((e for e in events if e.name() == "[memory]"), key=lambda e: e.start_ns())
    except AttributeError:  # profiler internals moved
        return None
    cur = peak = 0
    for e in mem:
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak


def peak_bytes(fn, device: torch.device) -> int | None:
    """Bytes above the starting level at the high-water mark of fn(), or None."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    try:
        return _cpu_peak(fn)
    except Exception:  # noqa: BLE001 - a profiler that will not start just means n/a
        return None
