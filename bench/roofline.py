"""The machine's GEMM rate, measured in the same run: the roofline that
LSTM GFLOP/s are compared with (an LSTM is GEMMs plus elementwise math)."""

from __future__ import annotations

import torch

from .timing import interleaved


def gemm_size(device: torch.device) -> int:
    return 4096 if device.type == "cuda" else 1024


def gemm_call(dtype: torch.dtype, device: torch.device, n: int | None = None):
    """(zero-argument n x n x n torch.mm, its FLOPs)."""
    n = n or gemm_size(device)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=g, device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    return (lambda: torch.mm(a, b, out=out)), 2 * n**3


def gemm_gflops(dtype: torch.dtype, device: torch.device, n: int | None = None, repeats: int = 10) -> float:
    """Best GFLOP/s of an n x n x n torch.mm over repeats: the roofline is a peak,
    and on a shared machine the best sample is the least disturbed."""
    fn, flops = gemm_call(dtype, device, n)
    ms = interleaved({"mm": fn}, device, repeats, warmup=2)["mm"]
    return flops / (min(ms) * 1e-3) / 1e9
