"""Pure-PyTorch LSTM layer with exactly the fused op's semantics.

It is the oracle of the tests and the fallback when the extension is not
built. Written for clarity, one small op at a time; it is slow on purpose.

Semantics of one layer in one direction (shapes: x (T, B, I), h0 (B, P),
c0 (B, H), P = proj_size or H):

* gates in nn.LSTM's order i, f, g, o; with w_hr, h = w_hr (o * tanh(c)).
* lengths (B,): sample b runs for lengths[b] steps; its output is zero after
  that and h_n, c_n are its state after its last step. A reverse direction
  walks each sample from its own last step back to 0.
* reset (T, B) bool: where reset[t, b] is set, the boundary between times
  t-1 and t is a document boundary: sample b's state is zero before step t
  (forward) or before step t-1 (reverse); values and gradients follow from
  h = h * keep.
* window k > 0: the forward values are unchanged, but no gradient crosses the
  recurrent state at the boundaries t = k, 2k, ... (in either direction).
"""

from __future__ import annotations

import torch


def _boundaries(T, lens, reverse, s):
    """Original time index processed at step s, and the boundary index crossed
    going from step s-1 to step s (see csrc/lstm_math.h)."""
    if reverse:
        return lens - 1 - s, lens - s
    full = torch.full_like(lens, s)
    return full, full


def lstm_layer(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, reset=None, lengths=None, window=0, reverse=False):
    T, B, _ = x.shape
    dev = x.device
    lens = torch.full((B,), T, dtype=torch.long, device=dev) if lengths is None else lengths.to(dev, torch.long)
    batch = torch.arange(B, device=dev)

    pre = x @ w_ih.t()
    if b_ih is not None:
        pre = pre + b_ih
    if b_hh is not None:
        pre = pre + b_hh

    h, c = h0, c0
    outputs = []
    for s in range(T):
        active = lens > s
        t, boundary = _boundaries(T, lens, reverse, s)
        if s > 0 and window > 0:
            cut = (active & (boundary % window == 0))[:, None]
            h = torch.where(cut, h.detach(), h)
            c = torch.where(cut, c.detach(), c)
        if reset is not None:
            if s == 0:
                zero = reset[0] & active if not reverse else torch.zeros_like(active)
            else:
                zero = reset[boundary.clamp(0, T - 1), batch] & active
            keep = (~zero)[:, None].to(h.dtype)
            h, c = h * keep, c * keep
        gates = pre[t.clamp(0, T - 1), batch] + h @ w_hh.t()
        i, f, g, o = gates.chunk(4, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        if w_hr is not None:
            h_new = h_new @ w_hr.t()
        run = active[:, None]
        h = torch.where(run, h_new, h)
        c = torch.where(run, c_new, c)
        outputs.append(torch.where(run, h_new, torch.zeros_like(h_new)))

    P = h0.shape[1]
    y = torch.stack(outputs) if outputs else x.new_zeros(0, B, P)
    if reverse and T > 0:
        # Step s of sample b holds time lens[b] - 1 - s: the same map undoes it.
        steps = torch.arange(T, device=dev)[:, None]
        src = (lens[None, :] - 1 - steps).clamp(min=0)
        valid = (steps < lens[None, :])[..., None]
        y = torch.where(valid, y.gather(0, src[..., None].expand(T, B, P)), torch.zeros_like(y))
    return y, h, c
