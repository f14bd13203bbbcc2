"""What `window` and `reset` cost the fused op: one layer's forward+backward
at one size without either, with a window, and with a reset mask, timed
round-robin in one process so that the machine's drift hits all three alike.

    python -m bench.feature_cost --config 100,16,256,256 --window 10 --reset 0.05

The standard preset's "window", "reset" and "baseline" rows are separate
configurations, timed minutes apart; on a shared machine they drift apart by
more than these features cost, so this tool isolates the op and interleaves
the three.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import rnnkernels  # noqa: F401  (registers torch.ops.rnnkernels)

from .layer_inputs import layer_inputs
from .timing import interleaved


def variants(T, B, I, H, window, reset_p, seed=0):  # noqa: E741
    """{name: zero-argument forward+backward call}."""
    g = torch.Generator().manual_seed(seed)
    L = layer_inputs(T, B, I, H, g)
    x, h0, c0, w_ih, w_hh, b = L.x, L.h0, L.c0, L.w_ih, L.w_hh, L.b
    reset = torch.rand(T, B, generator=g) < reset_p
    grad_y = torch.randn(T, B, H, generator=g)
    op = torch.ops.rnnkernels

    def call(win, rst):
        def run():
            y, _, _, gates, cells = op.lstm_forward(x, h0, c0, w_ih, w_hh, b, b, None, rst, None, win, False, True)
            op.lstm_backward(grad_y, None, None, x, h0, c0, w_ih, w_hh, None, rst, None, y, gates, cells,
                             win, False, True, True)

        return run

    return {"plain": call(0, None), f"window={window}": call(window, None), f"reset {reset_p:.0%}": call(0, reset)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.feature_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="100,16,256,256", help="T,B,I,H (one layer, float32)")
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--reset", type=float, default=0.05, help="probability that a step starts a new sequence")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=60)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    T, B, I, H = (int(v) for v in args.config.split(","))  # noqa: E741
    ms = interleaved(variants(T, B, I, H, args.window, args.reset), torch.device("cpu"), args.repeats, warmup=5)
    base = float(np.median(ms["plain"]))
    print(f"T{T} B{B} I{I} H{H} float32, threads {torch.get_num_threads()}, "
          f"forward+backward, median of {args.repeats} interleaved")
    for name, samples in ms.items():
        med = float(np.median(samples))
        print(f"{name:14s} {med:8.3f} ms  {100 * (med / base - 1):+6.1f}%")


if __name__ == "__main__":
    main()
