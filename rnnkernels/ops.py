"""The fused op's Python face: fake kernels for tracing and its autograd.

torch.ops.rnnkernels.lstm_forward runs one layer in one direction; its
backward is the fused C++ lstm_backward, not autograd through small ops.
"""

from __future__ import annotations

import torch

from . import _extension

_OPS_READY = _extension.cpu_extension()


def lstm_layer(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, reset=None, lengths=None, window=0, reverse=False):
    """One fused LSTM layer-direction: returns (y, h_n, c_n).

    x (T, B, I); h0 (B, P); c0 (B, H); reset (T, B) bool; lengths (B,) int64 on
    the CPU, sorted in decreasing order. See rnnkernels.reference.lstm_layer for
    the semantics, which this matches.
    """
    tensors = (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    need_backward = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    y, h_n, c_n, _, _ = torch.ops.rnnkernels.lstm_forward(
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reset, lengths, window, reverse, need_backward
    )
    return y, h_n, c_n


def _check_devices(x, **tensors):
    """The device checks of csrc/lstm_args.cpp, for the fake (and meta) kernels."""
    for name, t in tensors.items():
        if t is not None and t.device != x.device:
            raise RuntimeError(f"rnnkernels.lstm: {name} is on {t.device} but x is on {x.device}")


def _register() -> None:
    @torch.library.register_fake("rnnkernels::lstm_forward")
    def _forward_fake(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reset, lengths, window, reverse, need_backward):
        _check_devices(x, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, w_hr=w_hr, reset=reset)
        T, B, _ = x.shape
        H, P = w_ih.shape[0] // 4, w_hh.shape[1]
        saved = (lambda *shape: x.new_empty(shape)) if need_backward else (lambda *shape: x.new_empty(0))
        return (x.new_empty(T, B, P), x.new_empty(B, P), x.new_empty(B, H), saved(T, B, 4 * H), saved(T, B, H))

    @torch.library.register_fake("rnnkernels::lstm_backward")
    def _backward_fake(grad_y, grad_hn, grad_cn, x, h0, c0, w_ih, w_hh, w_hr, reset, lengths, y, gates, cells, window, reverse, need_dx, need_bias):
        _check_devices(x, grad_y=grad_y, grad_hn=grad_hn, grad_cn=grad_cn, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh,
                       w_hr=w_hr, reset=reset, y=y, gates=gates, cells=cells)  # fmt: skip
        H, P = w_ih.shape[0] // 4, w_hh.shape[1]
        return (
            x.new_empty(x.shape) if need_dx else x.new_empty(0),
            x.new_empty(h0.shape),
            x.new_empty(c0.shape),
            x.new_empty(w_ih.shape),
            x.new_empty(w_hh.shape),
            x.new_empty(4 * H) if need_bias else x.new_empty(0),
            x.new_empty(P, H) if w_hr is not None else x.new_empty(0),
        )

    def setup_context(ctx, inputs, output):
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reset, lengths, window, reverse, _ = inputs
        y, _, _, gates, cells = output
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, w_hr, reset, lengths, y, gates, cells)
        ctx.window, ctx.reverse = window, reverse
        ctx.has_bias = (b_ih is not None, b_hh is not None)
        ctx.mark_non_differentiable(gates, cells)
        ctx.set_materialize_grads(False)

    def backward(ctx, grad_y, grad_hn, grad_cn, _grad_gates, _grad_cells):
        x, h0, c0, w_ih, w_hh, w_hr, reset, lengths, y, gates, cells = ctx.saved_tensors
        dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr = torch.ops.rnnkernels.lstm_backward(
            grad_y, grad_hn, grad_cn, x, h0, c0, w_ih, w_hh, w_hr, reset, lengths, y, gates, cells,
            ctx.window, ctx.reverse, ctx.needs_input_grad[0], any(ctx.has_bias),
        )  # fmt: skip
        return (
            dx if ctx.needs_input_grad[0] else None,
            dh0,
            dc0,
            dw_ih,
            dw_hh,
            db if ctx.has_bias[0] else None,
            db if ctx.has_bias[1] else None,
            dw_hr if w_hr is not None else None,
            None, None, None, None, None,
        )  # fmt: skip

    torch.library.register_autograd("rnnkernels::lstm_forward", backward, setup_context=setup_context)


if _OPS_READY:
    _register()
