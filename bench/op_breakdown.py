"""Where the fused op's time goes at one size: the op's forward (with and
without saving activations for backward) and backward beside the GEMMs they
are made of, each timed alone.

    python -m bench.op_breakdown --config 35,20,200,200 --threads 2

The recurrent products are timed both through at::mm and through the
packed-panel GEMM the CPU time loops use. What is left after the GEMMs is the
fused gate passes plus per-step and allocation overheads. Comparing a run with glibc's trim threshold raised
(MALLOC_TRIM_THRESHOLD_=268435456) shows how much of it is page faults on
freshly allocated buffers.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import rnnkernels  # noqa: F401  (registers torch.ops.rnnkernels)
from rnnkernels._extension import _C

from .layer_inputs import layer_inputs


def median_ms(fn, repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.op_breakdown", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="35,20,200,200", help="T,B,I,H (one layer, float32)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    T, B, I, H = (int(v) for v in args.config.split(","))
    L = layer_inputs(T, B, I, H, torch.Generator().manual_seed(0))
    x, h0, c0, w_ih, w_hh, b = L.x, L.h0, L.c0, L.w_ih, L.w_hh, L.b
    op = torch.ops.rnnkernels

    def forward(save):
        return op.lstm_forward(x, h0, c0, w_ih, w_hh, b, b, None, None, None, 0, False, save)

    y, _, _, gates, cells = forward(True)
    grad_y = torch.randn_like(y)
    h, R, dG = torch.randn(B, H), torch.empty(B, 4 * H), torch.randn(T * B, 4 * H)
    n = args.repeats
    rows = {
        "forward, saving for backward": median_ms(lambda: forward(True), n),
        "forward, inference": median_ms(lambda: forward(False), n),
        "  input GEMM (all steps)": median_ms(lambda: torch.addmm(b, x.view(T * B, I), w_ih.t()), n),
        "  recurrent GEMMs (T steps), at::mm": median_ms(lambda: [torch.mm(h, w_hh.t(), out=R) for _ in range(T)], n),
        "  recurrent GEMMs (T steps), panels": median_ms(lambda: _C.step_matmul(h, w_hh.t(), T), n),
        "backward": median_ms(
            lambda: op.lstm_backward(
                grad_y, None, None, x, h0, c0, w_ih, w_hh, None, None, None, y, gates, cells, 0, False, True, True
            ),
            n,
        ),
        "  weight/input GEMMs and bias sum": median_ms(
            lambda: (torch.mm(dG, w_ih), torch.mm(dG.t(), x.view(T * B, I)), torch.mm(dG.t(), y.view(T * B, H)), dG.sum(0)),
            n,
        ),
        "  recurrent GEMMs (T steps), at::mm ": median_ms(lambda: [torch.mm(dG[:B], w_hh, out=h) for _ in range(T)], n),
        "  recurrent GEMMs (T steps), panels ": median_ms(lambda: _C.step_matmul(dG[:B], w_hh, T), n),
    }
    print(f"T{T} B{B} I{I} H{H} float32, threads {torch.get_num_threads()}, median of {n} (ms)")
    for name, ms in rows.items():
        print(f"{name:36s} {ms:8.3f}")


if __name__ == "__main__":
    main()
