"""Pure-PyTorch LSTM with exactly the fused op's semantics.

It is the oracle of the tests, the fallback when the extension is not built,
and what the fused op's double backward differentiates (rnnkernels/ops.py).
Written for clarity, one small op at a time; it is slow on purpose.

`lstm` takes the arguments of torch.ops.rnnkernels.lstm (the whole stack);
`lstm_layer` is one layer in one direction on padded input.

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


def _boundaries(lens, reverse, s):
    """Original time index processed at step s, and the boundary index crossed
    going from step s-1 to step s (see csrc/lstm_math.h)."""
    if reverse:
        return lens - 1 - s, lens - s
    full = torch.full_like(lens, s)
    return full, full


def lstm_layer(
    x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, reset=None, lengths=None, window=0, reverse=False
):
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
        t, boundary = _boundaries(lens, reverse, s)
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


def packed_index(batch_sizes, device):
    """(time, sample) of every packed row, in packed order."""
    batch_sizes = batch_sizes.cpu()
    t = torch.repeat_interleave(torch.arange(len(batch_sizes)), batch_sizes)
    starts = torch.cumsum(batch_sizes, 0) - batch_sizes
    b = torch.arange(int(batch_sizes.sum())) - torch.repeat_interleave(starts, batch_sizes)
    return t.to(device), b.to(device)


def _to_padded(rows, batch_sizes):
    """Packed rows (N, F) as a zero-padded (T, B, F) tensor."""
    T, B = len(batch_sizes), int(batch_sizes[0])
    return rows.new_zeros(T, B, rows.shape[-1]).index_put(packed_index(batch_sizes, rows.device), rows)


def lstm(input, hx, cx, params, batch_sizes, reset, has_biases, num_layers, bidirectional, dropout, train, window,
         dropout_masks=None):  # fmt: skip
    """The whole stack, with torch.ops.rnnkernels.lstm's arguments: returns
    (output, hy, cy). dropout_masks, one (rows, D*P) tensor per layer below
    the last, replaces the random masks of dropout between layers."""
    D = 2 if bidirectional else 1
    per = len(params) // (num_layers * D)
    proj = per == (5 if has_biases else 3)
    H = params[0].shape[0] // 4
    P = params[per - 1].shape[0] if proj else H
    if batch_sizes is not None:
        x = _to_padded(input, batch_sizes)
        lengths = (batch_sizes[None, :] > torch.arange(int(batch_sizes[0]))[:, None]).sum(1)
    else:
        x, lengths = input, None
    B = x.shape[1]
    if hx is None:
        hx = x.new_zeros(num_layers * D, B, P)
    if cx is None:
        cx = x.new_zeros(num_layers * D, B, H)
    h_n, c_n = [], []
    for layer in range(num_layers):
        outs = []
        for d in range(D):
            k = layer * D + d
            w = params[k * per : (k + 1) * per]
            b_ih, b_hh = (w[2], w[3]) if has_biases else (None, None)
            y, h, c = lstm_layer(x, hx[k], cx[k], w[0], w[1], b_ih, b_hh, w[-1] if proj else None, reset, lengths,
                                 window, d == 1)  # fmt: skip
            outs.append(y)
            h_n.append(h)
            c_n.append(c)
        x = torch.cat(outs, 2)
        if layer + 1 < num_layers and train and dropout > 0:
            if dropout_masks is not None:
                mask = dropout_masks[layer]
                mask = _to_padded(mask, batch_sizes) if batch_sizes is not None else mask.view(x.shape)
                x = x * mask
            else:
                x = torch.nn.functional.dropout(x, dropout, training=True)
    if batch_sizes is not None:
        x = x[packed_index(batch_sizes, x.device)]
    return x, torch.stack(h_n), torch.stack(c_n)
