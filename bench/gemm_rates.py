"""The per-step products of the CPU kernels at a configuration's sizes:
at::mm (MKL) beside the packed-panel GEMM the time loops use, both timed over
T steps with the weight packed once, as one call of the op does.

    python -m bench.gemm_rates --config 35,20,200,200 --threads 2

Each step multiplies a few rows (the batch) by a weight reused every step:
h @ w_hh^T in the forward, dG @ w_hh in the backward. Those thin products
are where MKL's GEMM falls far below the machine's FMA rate on AMD CPUs.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from rnnkernels._extension import _C

from .timing import interleaved


def products(T: int, B: int, H: int, dtype: torch.dtype) -> dict:
    """{name: (a, b)}: the per-step operands, b as the kernels meet it."""
    g = torch.Generator().manual_seed(0)
    w_hh = torch.randn(4 * H, H, generator=g, dtype=dtype) / H**0.5
    return {
        "forward  h @ w_hh^T": (torch.randn(B, H, generator=g, dtype=dtype), w_hh.t()),
        "backward dG @ w_hh": (torch.randn(B, 4 * H, generator=g, dtype=dtype), w_hh),
    }


def rates(T: int, B: int, H: int, dtype: torch.dtype, repeats: int) -> list:
    rows = []
    for name, (a, b) in products(T, B, H, dtype).items():
        out = torch.empty(a.shape[0], b.shape[1], dtype=dtype)

        def aten():
            for _ in range(T):
                torch.mm(a, b, out=out)

        ms = interleaved({"at::mm": aten, "panels": lambda: _C.step_matmul(a, b, T)}, torch.device("cpu"),
                         repeats, warmup=3)
        flops = 2 * a.shape[0] * a.shape[1] * b.shape[1] * T
        rows.append((name, {k: flops / (np.median(v) * 1e-3) / 1e9 for k, v in ms.items()}))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gemm_rates", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="35,20,200,200", help="T,B,H or T,B,I,H (I is not used)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    if _C is None:
        raise SystemExit("the rnnkernels extension is not built")
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(v) for v in args.config.split(",")]
    T, B, H = sizes[0], sizes[1], sizes[-1]
    dtype = getattr(torch, args.dtype)
    print(f"T{T} B{B} H{H} {args.dtype}, threads {torch.get_num_threads()}, median of {args.repeats}; "
          f"packed GEMM enabled: {_C.panel_gemm_enabled(dtype)}")
    print(f"{'product (x T steps)':24s} {'at::mm GFLOP/s':>15s} {'panels GFLOP/s':>15s} {'ratio':>7s}")
    for name, r in rates(T, B, H, dtype, args.repeats):
        print(f"{name:24s} {r['at::mm']:15.1f} {r['panels']:15.1f} {r['panels'] / r['at::mm']:6.2f}x")


if __name__ == "__main__":
    main()
