"""Per-step LSTM loops for the torchscript and torch.compile peers.

As in PyTorch's fastrnns benchmark: the input GEMM for the whole sequence
first, then one cell per step. A direction runs on a time-flipped sequence,
so the loop only ever walks forward; `step_masks` turns reset/window into
what that walk needs, with rnnkernels' semantics (see rnnkernels/reference.py).
"""

# TorchScript reads these annotations: typing's List / Optional / Tuple, not list[...] or X | None.
# ruff: noqa: UP006, UP035, UP045

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor


def lstm_cell(pre: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, w_hr: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    gates = pre + torch.mm(h, w_hh.t())
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    if w_hr is not None:
        h = torch.mm(h, w_hr.t())
    return h, c


def scripted_loop(
    pre: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, w_hr: Optional[Tensor], keep: Optional[Tensor], cuts: List[bool]
) -> Tuple[Tensor, Tensor, Tensor]:
    outs: List[Tensor] = []
    for s in range(pre.size(0)):
        if cuts[s]:
            h = h.detach()
            c = c.detach()
        if keep is not None:
            h = h * keep[s]
            c = c * keep[s]
        h, c = lstm_cell(pre[s], h, c, w_hh, w_hr)
        outs.append(h)
    return torch.stack(outs), h, c


def python_loop(cell, pre, h, c, w_hh, w_hr, keep, cuts):
    """scripted_loop with the cell passed in (a compiled one for torch.compile)."""
    outs = []
    for s in range(pre.size(0)):
        if cuts[s]:
            h, c = h.detach(), c.detach()
        if keep is not None:
            h, c = h * keep[s], c * keep[s]
        h, c = cell(pre[s], h, c, w_hh, w_hr)
        outs.append(h)
    return torch.stack(outs), h, c


def step_masks(
    reset: Optional[Tensor], T: int, window: int, reverse: bool, dtype
) -> Tuple[Optional[Tensor], List[bool]]:
    """keep (T, B, 1): state multiplier before step s; cuts[s]: detach the state before step s.

    Step s of the reverse walk processes time T-1-s and crosses the boundary
    T-s; the forward walk crosses boundary s."""
    boundary = [T - s if reverse else s for s in range(T)]
    cuts = [window > 0 and s > 0 and boundary[s] % window == 0 for s in range(T)]
    keep = None
    if reset is not None:
        r = reset
        if reverse:
            r = torch.cat([torch.zeros_like(reset[:1]), reset.flip(0)[:-1]])
        keep = (~r).to(dtype).unsqueeze(-1)
    return keep, cuts


def run_stack(loop, weights, x: Tensor, cfg, reset: Optional[Tensor]) -> Tensor:
    """Multi-layer, optionally bidirectional LSTM from a one-direction `loop`.

    weights[(layer, direction)] = (w_ih, w_hh, bias or None, w_hr or None)."""
    T, B = x.shape[:2]
    dirs = 2 if cfg.bidirectional else 1
    P = cfg.proj or cfg.H
    for layer in range(cfg.layers):
        outs = []
        for d in range(dirs):
            w_ih, w_hh, bias, w_hr = weights[(layer, d)]
            pre = torch.matmul(x, w_ih.t())
            if bias is not None:
                pre = pre + bias
            if d:
                pre = pre.flip(0)
            keep, cuts = step_masks(reset, T, cfg.window, d == 1, x.dtype)
            h0 = x.new_zeros(B, P)
            c0 = x.new_zeros(B, cfg.H)
            y, _, _ = loop(pre, h0, c0, w_hh, w_hr, keep, cuts)
            outs.append(y.flip(0) if d else y)
        x = outs[0] if dirs == 1 else torch.cat(outs, dim=2)
    return x
