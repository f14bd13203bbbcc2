"""Interleaved timing: every round runs each backend once, in an order drawn
anew each round, so drift (other load, clocks) hits all backends alike and
no backend always runs after the same one (a call runs slower after one that
left the caches full of its own data: in a fixed cyclic order, the same
config's inference read 5% slower after a training step than after another
inference)."""

from __future__ import annotations

import gc
import math
import random
import time

import numpy as np
import torch

# A sample lasts at least this long: a shorter call is timed as a run of
# back-to-back calls and the sample is their mean, since one call of tens of
# microseconds times mostly the timer, a waking thread and cold caches.
SAMPLE_MS = 2.0
MAX_ROUNDS = 200


def time_once(fn, device: torch.device, calls: int = 1) -> float:
    """Milliseconds per call of `calls` back-to-back calls: CUDA events on a
    GPU, perf_counter on the CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / calls
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) * 1e3 / calls


def calls_per_sample(fn, device: torch.device, sample_ms: float) -> int:
    """Back-to-back calls that make one sample of at least sample_ms."""
    if sample_ms <= 0:
        return 1
    ms = min(time_once(fn, device) for _ in range(2))
    return max(1, math.ceil(sample_ms / max(ms, 1e-3)))


def interleaved(
    fns: dict, device: torch.device, repeats: int, warmup: int, min_seconds: float = 0.0, sample_ms: float = 0.0
) -> dict:
    """{name: [ms per call, one per round]} for {name: zero-argument callable}:
    at least `repeats` rounds, and more (up to MAX_ROUNDS) until the rounds
    have taken min_seconds, so that a cheap call's median settles."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    calls = {n: calls_per_sample(fns[n], device, sample_ms) for n in names}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    samples = {n: [] for n in names}
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()  # a collection inside one sample would land on one backend only
    started = time.perf_counter()
    try:
        r, order = 0, random.Random(0)
        while r < repeats or (time.perf_counter() - started < min_seconds and r < MAX_ROUNDS):
            for n in order.sample(names, len(names)):
                samples[n].append(time_once(fns[n], device, calls[n]))
            r += 1
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


def median_ratio(base: list, ms: list) -> float:
    """Median over rounds of base / ms: each round's two samples ran side by
    side, so a ratio cancels the drift that separates rounds."""
    return float(np.median(np.asarray(base, dtype=float) / np.asarray(ms, dtype=float)))
