"""FLOP counts of an LSTM, the numerator of GFLOP/s and of the roofline fraction."""

from __future__ import annotations


def lstm_forward_flops(T: int, B: int, I: int, H: int,  # noqa: E741
                       layers: int = 1, bidirectional: bool = False, proj: int = 0) -> int:
    """Multiply-adds (x2) of the GEMMs of one forward pass.

    Per layer and direction: the input GEMM 2*T*B*4H*I, the recurrent GEMM
    2*T*B*4H*P (P = proj or H) and, with a projection, 2*T*B*P*H. Layers after
    the first read the previous layer's output, of width P times directions.
    Elementwise gate math is left out: it is a few percent at these sizes.
    """
    dirs = 2 if bidirectional else 1
    P = proj or H
    total = 0
    width = I
    for _ in range(layers):
        per_dir = 2 * T * B * 4 * H * (width + P)
        if proj:
            per_dir += 2 * T * B * P * H
        total += dirs * per_dir
        width = P * dirs
    return total


def lstm_flops(cfg, mode: str) -> int:
    """FLOPs of `mode` ("fwd" or "fwd+bwd"); backward counts twice forward
    (gradients with respect to both the inputs and the weights)."""
    fwd = lstm_forward_flops(cfg.T, cfg.B, cfg.I, cfg.H, cfg.layers, cfg.bidirectional, cfg.proj)
    if mode == "fwd":
        return fwd
    if mode == "fwd+bwd":
        return 3 * fwd
    raise ValueError(f"mode must be 'fwd' or 'fwd+bwd', got {mode!r}")
