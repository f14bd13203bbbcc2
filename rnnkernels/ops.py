"""The fused ops' Python face: fake kernels for tracing, and the double backward.

torch.ops.rnnkernels.lstm runs a whole stack (every layer and direction) in
one call; its autograd is C++ (csrc/lstm_autograd.cpp), whose backward is the
fused lstm_backward. Here: fake (meta) kernels whose checks mirror
csrc/lstm_args.cpp, so that tracing sees the errors a real call would raise;
and the autograd of lstm_backward itself, so that second-order gradients
(gradient penalties, Hessian-vector products) are right: it differentiates
the reference implementation of the same stack.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from . import _extension, reference


def _name(dtype):
    """c10's name of a dtype ("Float", "BFloat16"), as the C++ checks print it."""
    return torch.empty(0, dtype=dtype).type().removeprefix("torch.").removesuffix("Tensor")


def bind(op, args, kwargs):
    """The arguments of a call of `op`, named by its schema (the one
    definition of the signature, csrc/lstm_args.h)."""
    names = [a.name for a in op._schema.arguments]
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return SimpleNamespace(**bound)


def _fail(msg):
    raise RuntimeError(f"rnnkernels.lstm: {msg}")


def _check_like(x, t, name):
    if t.dtype != x.dtype:
        _fail(f"{name} has dtype {_name(t.dtype)} but input has dtype {_name(x.dtype)}")
    if t.device != x.device:
        _fail(f"{name} is on {t.device} but input is on {x.device}")


def _check_shape(t, shape, name):
    if tuple(t.shape) != tuple(shape):
        _fail(f"{name} must have shape {list(shape)}, got {list(t.shape)}")


def _check_tensor(x, t, shape, name):
    """_check_shape, then _check_like, where t is given (csrc/lstm_args.cpp's check_tensor)."""
    if t is not None:
        _check_shape(t, shape, name)
        _check_like(x, t, name)


def _param_name(kind, layer, d):
    return f"{kind}_l{layer}" + ("_reverse" if d else "")


def _known(t):
    """Whether t's values can be read (not a fake tensor of a trace)."""
    return not isinstance(t, torch._subclasses.FakeTensor)


def check_args(a):
    """The checks of csrc/lstm_args.cpp's check_args, with its messages;
    returns the sizes they imply."""
    x = a.input
    if not x.dtype.is_floating_point:
        _fail(f"input must be a floating point tensor, got {_name(x.dtype)}")
    d = SimpleNamespace(packed=a.batch_sizes is not None)
    if d.packed:
        if x.dim() != 2:
            _fail(f"packed input must be 2-D (rows, features), got {x.dim()}-D")
        bs = a.batch_sizes
        if bs.dtype != torch.int64 or bs.dim() != 1 or bs.device.type != "cpu":
            got = f"{_name(bs.dtype)} {list(bs.shape)} on {bs.device}"
            _fail(f"batch_sizes must be a 1-D int64 tensor on the CPU, got {got}")
        d.rows, d.T = x.shape[0], bs.shape[0]
        if _known(bs):
            sizes = bs.tolist()
            for t, n in enumerate(sizes):
                if n < 1 or (t > 0 and n > sizes[t - 1]):
                    _fail(f"batch_sizes must be positive and non-increasing, got batch_sizes[{t}] = {n}")
            if sum(sizes) != d.rows:
                _fail(f"batch_sizes sum to {sum(sizes)} but the packed input has {d.rows} rows")
            d.B = sizes[0] if sizes else 0
        elif a.hx is not None:
            d.B = a.hx.shape[1]
        else:
            d.B = torch.library.get_ctx().new_dynamic_size()
    else:
        if x.dim() != 3:
            _fail(f"input must be 3-D (T, B, features), got {x.dim()}-D")
        d.T, d.B = x.shape[0], x.shape[1]
        d.rows = d.T * d.B
    d.I = x.shape[-1]
    if a.num_layers < 1:
        _fail(f"num_layers must be at least 1, got {a.num_layers}")
    if a.window < 0:
        _fail(f"window must be >= 0, got {a.window}")
    if not 0 <= a.dropout <= 1:
        _fail(f"dropout must be in [0, 1], got {a.dropout}")
    d.L, d.D = a.num_layers, 2 if a.bidirectional else 1
    groups, base, n = d.L * d.D, 4 if a.has_biases else 2, len(a.params)
    if n % groups or n // groups not in (base, base + 1):
        _fail(f"expected {base} or {base + 1} params for each of the {groups} layer-directions (w_ih, w_hh"
              f"{', b_ih, b_hh' if a.has_biases else ''}, optionally w_hr), got {n} params")  # fmt: skip
    d.per_group = n // groups
    d.proj = d.per_group == base + 1
    w0 = a.params[0]
    if w0.dim() != 2 or w0.shape[0] == 0 or w0.shape[0] % 4:
        _fail(f"weight_ih_l0 must have shape (4*hidden_size, input_size), got {list(w0.shape)}")
    d.H = w0.shape[0] // 4
    if d.proj:
        hr = a.params[base]
        if hr.dim() != 2 or hr.shape[0] == 0:
            _fail(f"weight_hr_l0 must have shape (proj_size, hidden_size) with proj_size > 0, got {list(hr.shape)}")
        d.P = hr.shape[0]
    else:
        d.P = d.H
    for layer in range(d.L):
        for di in range(d.D):
            w = a.params[(layer * d.D + di) * d.per_group :][: d.per_group]
            shapes = [("weight_ih", (4 * d.H, d.I if layer == 0 else d.D * d.P)), ("weight_hh", (4 * d.H, d.P))]
            if a.has_biases:
                shapes += [("bias_ih", (4 * d.H,)), ("bias_hh", (4 * d.H,))]
            if d.proj:
                shapes.append(("weight_hr", (d.P, d.H)))
            for t, (kind, shape) in zip(w, shapes):
                _check_tensor(x, t, shape, _param_name(kind, layer, di))
    _check_tensor(x, a.hx, (groups, d.B, d.P), "hx")
    _check_tensor(x, a.cx, (groups, d.B, d.H), "cx")
    if a.reset is not None:
        if a.reset.dtype != torch.bool:
            _fail(f"reset must be a bool tensor, got {_name(a.reset.dtype)}")
        _check_shape(a.reset, (d.T, d.B), "reset")
        if a.reset.device != x.device:
            _fail(f"reset is on {a.reset.device} but input is on {x.device}")
    return d


def dropout_active(a):
    return a.train and a.dropout > 0 and a.num_layers > 1


def acc_dtype(dtype):
    """What the cell state runs in (csrc/lstm_args.h acc_type)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def saved_layout(a, d):
    """(shape, dtype) of what a forward that saves for backward returns (see
    SavedLayer in csrc/lstm_args.h)."""
    dtype = a.input.dtype
    if a.input.device.type == "cpu":
        dtype = acc_dtype(dtype)  # the CPU runs the half types on its float32 kernels
    layout = []
    for layer in range(d.L):
        layout += [((d.rows, 4 * d.H), dtype)] * d.D + [((d.D, d.rows, d.H), acc_dtype(dtype))]
        if layer + 1 < d.L:
            layout += [((d.rows, d.D * d.P), dtype)] * (2 if dropout_active(a) else 1)
    return layout


def _outputs(a, d):
    x = a.input
    out_shape = (*x.shape[:-1], d.D * d.P)
    return x.new_empty(out_shape), x.new_empty(d.L * d.D, d.B, d.P), x.new_empty(d.L * d.D, d.B, d.H)


def _dropout_masks(a, d, saved):
    """The masks in `saved`, one per layer below the last, or None."""
    if not dropout_active(a):
        return None
    per_layer = d.D + 3  # gates of each direction, cells, out, mask
    return [saved[layer * per_layer + d.D + 2] for layer in range(d.L - 1)]


_BACKWARD_TENSORS = ("grad_output", "grad_hy", "grad_cy", "input", "hx", "cx")


def _register() -> None:
    lstm_op = torch.ops.rnnkernels.lstm.default
    forward_op = torch.ops.rnnkernels.lstm_forward.default
    backward_op = torch.ops.rnnkernels.lstm_backward.default

    @torch.library.register_fake("rnnkernels::lstm")
    def _lstm_fake(*args, **kwargs):
        a = bind(lstm_op, args, kwargs)
        return _outputs(a, check_args(a))

    @torch.library.register_fake("rnnkernels::lstm_forward")
    def _forward_fake(*args, **kwargs):
        a = bind(forward_op, args, kwargs)
        d = check_args(a)
        saved = [a.input.new_empty(s, dtype=t) for s, t in saved_layout(a, d)] if a.need_backward else []
        return (*_outputs(a, d), saved)

    @torch.library.register_fake("rnnkernels::lstm_backward")
    def _backward_fake(*args, **kwargs):
        a = bind(backward_op, args, kwargs)
        d = check_args(a)
        x = a.input
        for name, shape in (("grad_output", (*x.shape[:-1], d.D * d.P)), ("grad_hy", (d.L * d.D, d.B, d.P)),
                            ("grad_cy", (d.L * d.D, d.B, d.H))):  # fmt: skip
            _check_tensor(x, getattr(a, name), shape, name)
        layout = saved_layout(a, d)
        if len(a.saved) != len(layout):
            _fail(
                f"backward needs the {len(layout)} tensors a forward with need_backward=True saves, got {len(a.saved)}"
            )
        grad_input = x.new_empty(x.shape) if a.need_input_grad else x.new_empty(0)
        grad_params = [p.new_empty(p.shape) for p in a.params] if a.need_weight_grad else []
        return grad_input, x.new_empty(d.L * d.D, d.B, d.P), x.new_empty(d.L * d.D, d.B, d.H), grad_params

    def setup_context(ctx, inputs, output):
        a = bind(backward_op, inputs, {})
        d = check_args(a)
        masks = _dropout_masks(a, d, a.saved) or []
        tensors = [getattr(a, n) for n in _BACKWARD_TENSORS]
        ctx.save_for_backward(*tensors, *a.params, a.batch_sizes, a.reset, *masks)
        ctx.n_params = len(a.params)
        ctx.flags = (a.has_biases, a.num_layers, a.bidirectional, a.dropout, a.train, a.window, a.need_input_grad)
        ctx.need_weight_grad = a.need_weight_grad
        ctx.n_saved = len(a.saved)
        ctx.set_materialize_grads(False)

    def double_backward(ctx, gg_input, gg_hx, gg_cx, gg_params):
        """Gradients of lstm_backward's outputs with respect to its inputs: a
        vector-Jacobian product of the first-order gradients, recomputed on
        the reference. torch.func keeps the recomputation apart from the
        caller's graph, which still sees it as differentiable (third order)."""
        n_params = ctx.n_params
        saved = ctx.saved_tensors
        go, ghy, gcy, x, hx, cx = saved[:6]
        params = list(saved[6 : 6 + n_params])
        batch_sizes, reset = saved[6 + n_params : 8 + n_params]
        masks = list(saved[8 + n_params :]) or None
        has_biases, num_layers, bidirectional, dropout, train, window, need_input_grad = ctx.flags
        primals = [t for t in (x, hx, cx) if t is not None] + params
        incoming = [g for g in (go, ghy, gcy) if g is not None]

        def stack(primals):
            it = iter(primals)
            x_, hx_, cx_ = (None if t is None else next(it) for t in (x, hx, cx))
            outs = reference.lstm(x_, hx_, cx_, list(it), batch_sizes, reset, has_biases, num_layers, bidirectional,
                                  dropout, train, window, dropout_masks=masks)  # fmt: skip
            return tuple(o for o, g in zip(outs, (go, ghy, gcy)) if g is not None)

        def first_order(*args):
            _, vjp = torch.func.vjp(lambda *p: stack(p), *args[: len(primals)])
            return vjp(tuple(args[len(primals) :]))

        # The incoming gradient of each first-order output; zero where none came.
        given = [g for g, t in zip([gg_input if need_input_grad else None, gg_hx, gg_cx], (x, hx, cx)) if t is not None]
        given += list(gg_params) if ctx.need_weight_grad and gg_params is not None else [None] * n_params
        cotangents = tuple(torch.zeros_like(p) if g is None else g for g, p in zip(given, primals))
        _, vjp = torch.func.vjp(first_order, *primals, *incoming)
        grads = iter(vjp(cotangents))
        by_input = {}
        for name, t in zip(("input", "hx", "cx"), (x, hx, cx)):
            by_input[name] = None if t is None else next(grads)
        param_grads = [next(grads) for _ in params]
        for name, t in zip(("grad_output", "grad_hy", "grad_cy"), (go, ghy, gcy)):
            by_input[name] = None if t is None else next(grads)
        result = [by_input[n] for n in _BACKWARD_TENSORS]
        return (*result, param_grads, None, None, None, None, None, None, None, None, None,
                [None] * ctx.n_saved, None, None)  # fmt: skip

    torch.library.register_autograd("rnnkernels::lstm_backward", double_backward, setup_context=setup_context)


if _extension.cpu_extension():
    _register()
