"""Interleaved timing: every repeat runs each backend once, in a rotating
order, so drift (other load, clocks, caches) hits all backends alike."""

from __future__ import annotations

import gc
import time

import numpy as np
import torch


def time_once(fn, device: torch.device) -> float:
    """Milliseconds of one call: CUDA events on a GPU, perf_counter on the CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def interleaved(fns: dict, device: torch.device, repeats: int, warmup: int) -> dict:
    """{name: [ms per repeat]} for {name: zero-argument callable}."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    samples = {n: [] for n in names}
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()  # a collection inside one sample would land on one backend only
    try:
        for r in range(repeats):
            k = r % len(names)
            for n in names[k:] + names[:k]:
                samples[n].append(time_once(fns[n], device))
    finally:
        if enabled:
            gc.enable()
    return samples


def summarize(ms: list) -> tuple[float, float]:
    """Median and spread = interquartile range / median."""
    a = np.asarray(ms, dtype=float)
    med = float(np.median(a))
    q1, q3 = np.percentile(a, [25, 75])
    return med, float((q3 - q1) / med) if med > 0 else 0.0
