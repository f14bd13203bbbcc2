"""Hostile and degenerate inputs: the same exception (type and text) as
nn.LSTM where nn.LSTM has one, a clear error of our own where it has none,
the same result as nn.LSTM where it works, and never a crash: direct calls of
torch.ops.rnnkernels.* with bad arguments and sizes whose allocation fails
raise RuntimeError."""

from __future__ import annotations

import itertools
import re

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkernels
from conftest import grads, lstm_pair, requires_extension

pytestmark = requires_extension


def outcome(fn):
    """('ok', None) or (exception type, message) of calling fn."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the type is what is compared
        return type(e), str(e)
    return "ok", None


def pair32(**kwargs):
    return lstm_pair(3, 4, dtype=torch.float32, **kwargs)


X = lambda *s, dtype=torch.float32, **kw: torch.randn(*s, dtype=torch.float64, **kw).to(dtype)  # noqa: E731


# --- module: the same error as nn.LSTM ----------------------------------------

SAME_AS_NN = {
    "bool input": lambda: (X(5, 2, 3) > 0, None),
    "int32 input": lambda: (X(5, 2, 3).int(), None),
    "int64 input": lambda: (X(5, 2, 3).long(), None),
    "uint8 input": lambda: (X(5, 2, 3).to(torch.uint8), None),
    "float16 input": lambda: (X(5, 2, 3).half(), None),
    "bfloat16 input": lambda: (X(5, 2, 3).bfloat16(), None),
    "complex input": lambda: (X(5, 2, 3).to(torch.complex64), None),
    "float64 input, float32 model": lambda: (X(5, 2, 3, dtype=torch.float64), None),
    "unbatched bool input": lambda: (X(5, 3) > 0, None),
    "T = 0": lambda: (X(0, 2, 3), None),
    "T = 0 with hx": lambda: (X(0, 2, 3), (X(1, 2, 4), X(1, 2, 4))),
    "T = 0 unbatched": lambda: (X(0, 3), None),
    "T = 0 and B = 0": lambda: (X(0, 0, 3), None),
    "h with wrong batch": lambda: (X(5, 2, 3), (X(1, 3, 4), X(1, 2, 4))),
    "c with wrong hidden size": lambda: (X(5, 2, 3), (X(1, 2, 4), X(1, 2, 3))),
    "h with too many layers": lambda: (X(5, 2, 3), (X(2, 2, 4), X(2, 2, 4))),
    "h batch-major": lambda: (X(5, 2, 3), (X(2, 1, 4), X(2, 1, 4))),
    "4-D state": lambda: (X(5, 2, 3), (X(1, 1, 2, 4), X(1, 1, 2, 4))),
    "2-D state, batched input": lambda: (X(5, 2, 3), (X(2, 4), X(2, 4))),
    "3-D state, unbatched input": lambda: (X(5, 3), (X(1, 1, 4), X(1, 1, 4))),
    "1-tuple state": lambda: (X(5, 2, 3), (X(1, 2, 4),)),
    "state not a tuple": lambda: (X(5, 2, 3), X(1, 2, 4)),
    "c is None": lambda: (X(5, 2, 3), (X(1, 2, 4), None)),
    "1-D input": lambda: (X(3), None),
    "4-D input": lambda: (X(5, 2, 3, 1), None),
    "wrong feature size": lambda: (X(5, 2, 4), None),
    "hx as a list": lambda: (X(5, 2, 3), [X(1, 2, 4), X(1, 2, 4)]),
}


@pytest.mark.parametrize("case", list(SAME_AS_NN))
def test_same_error_as_nn_lstm(case):
    ref, ours = pair32()
    torch.manual_seed(0)
    x, hx = SAME_AS_NN[case]()
    assert outcome(lambda: ours(x, hx)) == outcome(lambda: ref(x, hx))


def test_three_state_tensors_rejected_like_nn_lstm():
    ref, ours = pair32()
    x, hx = X(5, 2, 3), (X(1, 2, 4),) * 3
    assert outcome(lambda: ours(x, hx)) == outcome(lambda: ref(x, hx))


@pytest.mark.parametrize("batch_first", [False, True])
def test_mismatched_state_dtype_is_a_clear_runtime_error(batch_first):
    """nn.LSTM fails here too, with a message from whichever internal kernel
    it reached (oneDNN or a matmul); ours names the tensor and both dtypes."""
    for x_dtype, h_dtype, c_dtype in [(torch.float32, torch.float64, torch.float32),
                                      (torch.float32, torch.float32, torch.float64),
                                      (torch.float64, torch.float32, torch.float64),
                                      (torch.float32, torch.int64, torch.float32)]:  # fmt: skip
        ref, ours = lstm_pair(3, 4, dtype=x_dtype, batch_first=batch_first)
        x = X(*((2, 5, 3) if batch_first else (5, 2, 3)), dtype=x_dtype)
        hx = (X(1, 2, 4, dtype=h_dtype), X(1, 2, 4, dtype=c_dtype))
        kind, _ = outcome(lambda: ref(x, hx))
        assert kind is RuntimeError
        with pytest.raises(RuntimeError, match=r"rnnkernels\.lstm: [hc]0 has dtype \w+ but x has dtype \w+"):
            ours(x, hx)


def test_one_weight_of_another_dtype_is_a_clear_runtime_error():
    ref, ours = pair32(num_layers=2)
    for m in (ref, ours):
        m.weight_hh_l1 = nn.Parameter(m.weight_hh_l1.detach().double())
    x = X(5, 2, 3)
    assert outcome(lambda: ref(x))[0] is RuntimeError
    with pytest.raises(RuntimeError, match="rnnkernels.lstm: w_hh has dtype Double but x has dtype Float"):
        ours(x)


# Without a GPU the other device at hand is "meta"; the checks are the same.
DEVICE_CASES = {
    "input on another device": lambda m: m(X(5, 2, 3, device="meta")),
    "h on another device": lambda m: m(X(5, 2, 3), (X(1, 2, 4, device="meta"), X(1, 2, 4))),
    "c on another device": lambda m: m(X(5, 2, 3), (X(1, 2, 4), X(1, 2, 4, device="meta"))),
    "a weight on another device": lambda m: (
        setattr(m, "weight_hh_l0", nn.Parameter(torch.zeros(16, 4, device="meta"))),
        m(X(5, 2, 3)),
    ),
}


@pytest.mark.parametrize("case", list(DEVICE_CASES))
def test_device_mismatch_same_error_as_nn_lstm(case):
    ref, ours = pair32()
    got, want = outcome(lambda: DEVICE_CASES[case](ours)), outcome(lambda: DEVICE_CASES[case](ref))
    assert want[0] is RuntimeError and "not at the same device" in want[1]
    assert got == want


def test_module_on_meta_device_like_nn_lstm():
    """Deferred initialisation and shape tracing run whole modules on "meta"."""
    ref = nn.LSTM(3, 4, num_layers=2, device="meta")
    ours = rnnkernels.LSTM(3, 4, num_layers=2, device="meta")
    x = torch.empty(5, 2, 3, device="meta")
    y_r, (h_r, c_r) = ref(x)
    y_o, (h_o, c_o) = ours(x)
    assert (y_o.shape, h_o.shape, c_o.shape) == (y_r.shape, h_r.shape, c_r.shape)
    assert y_o.device.type == "meta"


def test_packed_integer_input_is_refused():
    """nn.LSTM skips its input checks for packed input and fails inside a
    matmul; ours refuses with the dtype message of the unpacked path."""
    _, ours = pair32()
    packed = pack_padded_sequence(X(5, 2, 3).long(), torch.tensor([5, 3]))
    with pytest.raises((ValueError, RuntimeError), match="dtype"):
        ours(packed)


# --- our own arguments: reset and window --------------------------------------


@pytest.mark.parametrize(
    "reset,kind,message",
    [
        (torch.zeros(5, 2), TypeError, "reset must be a bool tensor, got torch.float32"),
        (torch.zeros(5, 2, dtype=torch.uint8), TypeError, "reset must be a bool tensor, got torch.uint8"),
        (torch.zeros(5, 2, dtype=torch.long), TypeError, "reset must be a bool tensor, got torch.int64"),
        (torch.zeros(2, 5, dtype=torch.bool), RuntimeError, "reset must have shape (T, B) matching the input, got [2, 5]"),
        (torch.zeros(5, 3, dtype=torch.bool), RuntimeError, "reset must have shape (T, B) matching the input, got [5, 3]"),
        (torch.zeros(5, dtype=torch.bool), RuntimeError, "reset must have shape (T, B) matching the input, got [5]"),
        (torch.zeros(5, 2, 1, dtype=torch.bool), RuntimeError, "reset must have shape (T, B) matching the input, got [5, 2, 1]"),
        (torch.zeros(10, dtype=torch.bool)[::2], RuntimeError, "reset must have shape (T, B) matching the input, got [5]"),
    ],
)
def test_bad_reset_mask(reset, kind, message):
    _, ours = pair32()
    with pytest.raises(kind, match=re.escape(message)):
        ours(X(5, 2, 3), reset=reset)


def test_reset_mask_layout_follows_batch_first():
    _, ours = pair32(batch_first=True)
    with pytest.raises(RuntimeError, match=re.escape("reset must have shape (B, T) matching the input, got [5, 2]")):
        ours(X(2, 5, 3), reset=torch.zeros(5, 2, dtype=torch.bool))
    ours(X(2, 5, 3), reset=torch.zeros(2, 5, dtype=torch.bool))


def test_reset_mask_layout_with_packed_batch_first_input_does_not_depend_on_sorting():
    """A PackedSequence is time-major whatever batch_first says; whether its
    lengths happened to be sorted must not change the mask's expected layout."""
    _, ours = pair32(batch_first=True)
    x = X(2, 5, 3)
    layouts = []
    for enforce_sorted in (True, False):
        packed = pack_padded_sequence(x, torch.tensor([5, 3]), batch_first=True, enforce_sorted=enforce_sorted)
        ok = [outcome(lambda: ours(packed, reset=torch.zeros(*s, dtype=torch.bool)))[0] == "ok" for s in ((5, 2), (2, 5))]
        layouts.append(ok)
    assert layouts[0] == layouts[1]


@pytest.mark.parametrize("window", [-1, -100, 1.5, True, "2"])
def test_bad_window(window):
    with pytest.raises(ValueError, match="window must be a non-negative int"):
        rnnkernels.LSTM(3, 4, window=window)
    _, ours = pair32()
    with pytest.raises(ValueError, match="window must be a non-negative int"):
        ours(X(5, 2, 3), window=window)


def test_window_beyond_int64_is_refused_or_means_no_truncation():
    _, ours = pair32()
    x = X(5, 2, 3)
    made = outcome(lambda: rnnkernels.LSTM(3, 4, window=2**70))
    if made[0] is not ValueError:
        # Accepted: then it must behave as a window longer than any sequence.
        y, _ = ours(x, window=2**70)
        assert torch.equal(y, ours(x)[0])


# --- degenerate sizes: the same result as nn.LSTM ------------------------------


@pytest.mark.parametrize(
    "layers,bidirectional,proj,batch_first", [(1, False, 0, False), (2, True, 0, True), (2, True, 2, False)]
)
def test_empty_batch_like_nn_lstm(layers, bidirectional, proj, batch_first):
    ref, ours = lstm_pair(3, 4, num_layers=layers, bidirectional=bidirectional, proj_size=proj, batch_first=batch_first)
    D = 2 if bidirectional else 1
    x = torch.randn((0, 5, 3) if batch_first else (5, 0, 3), dtype=torch.float64)
    hx = (torch.randn(layers * D, 0, proj or 4, dtype=torch.float64), torch.randn(layers * D, 0, 4, dtype=torch.float64))
    results = []
    for m, kwargs in ((ref, {}), (ours, dict(window=2, reset=torch.zeros(x.shape[:2], dtype=torch.bool)))):
        leaves = [t.clone().requires_grad_() for t in (x, *hx)]
        y, (h, c) = m(leaves[0], tuple(leaves[1:]), **kwargs)
        results.append(((y, h, c), grads((y, h, c), leaves + list(m.parameters()))))
    for a, b in zip(results[0][0] + results[0][1], results[1][0] + results[1][1]):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a)  # parameter gradients are zeros


def test_single_step_single_sample_like_nn_lstm():
    ref, ours = lstm_pair(1, 1, num_layers=3, bidirectional=True)
    x = torch.randn(1, 1, 1, dtype=torch.float64)
    out_r, out_o = ref(x), ours(x, window=1, reset=torch.ones(1, 1, dtype=torch.bool))
    torch.testing.assert_close(out_o[0], out_r[0], rtol=1e-12, atol=1e-12)


# --- NaN and Inf propagate as in nn.LSTM ---------------------------------------


@pytest.mark.parametrize("where", ["x", "h0", "c0", "weight_hh_l0", "bias_ih_l1"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_non_finite_values_propagate_like_nn_lstm(where, value, dtype):
    results = []
    for proj, bidirectional in ((0, False), (2, True)):
        ref, ours = lstm_pair(3, 4, num_layers=2, proj_size=proj, bidirectional=bidirectional, dtype=dtype)
        D = 2 if bidirectional else 1
        g = torch.Generator().manual_seed(0)
        x = torch.randn(6, 3, 3, generator=g, dtype=dtype)
        h0 = torch.randn(2 * D, 3, proj or 4, generator=g, dtype=dtype)
        c0 = torch.randn(2 * D, 3, 4, generator=g, dtype=dtype)
        {"x": x[2, 1], "h0": h0[0, 1], "c0": c0[0, 1]}.get(where, torch.zeros(1))[0] = value
        for m in (ref, ours):
            if where.startswith(("weight", "bias")):
                with torch.no_grad():
                    getattr(m, where)[1] = value
            leaves = [t.clone().requires_grad_() for t in (x, h0, c0)]
            y, (h, c) = m(leaves[0], tuple(leaves[1:]))
            results.append(((y, h, c) + grads((y, h, c), leaves + list(m.parameters()))))
    tol = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    for want, got in zip(results[0::2], results[1::2]):
        for k, (a, b) in enumerate(zip(want, got)):
            assert torch.equal(a.isnan(), b.isnan()), f"item {k}: NaN positions differ"
            assert torch.equal(a.isinf(), b.isinf()) and torch.equal(a == float("inf"), b == float("inf")), f"item {k}"
            torch.testing.assert_close(b, a, equal_nan=True, **tol)


# --- direct op calls ----------------------------------------------------------

z = torch.zeros


def fwd_args(**change):
    a = dict(x=z(5, 2, 3), h0=z(2, 4), c0=z(2, 4), w_ih=z(16, 3), w_hh=z(16, 4), b_ih=z(16), b_hh=z(16),
             w_hr=None, reset=None, lengths=None, window=0, reverse=False, need_backward=True)  # fmt: skip
    a.update(change)
    return a


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(w_hr=torch.tensor(1.0)), "w_hr must have shape (P, H) with P > 0, got []"),
        (dict(w_hr=z(4)), "w_hr must have shape (P, H) with P > 0, got [4]"),
        (dict(w_hr=z(0, 4), h0=z(2, 0), w_hh=z(16, 0)), "w_hr must have shape (P, H) with P > 0, got [0, 4]"),
        (dict(w_hr=z(2, 3), h0=z(2, 2), w_hh=z(16, 2)), "w_hr must have shape [2, 4], got [2, 3]"),
        (dict(w_hr=z(2, 4, dtype=torch.float64), h0=z(2, 2), w_hh=z(16, 2)), "w_hr has dtype Double"),
        (dict(w_ih=z(0, 3)), "w_ih must have shape (4*H, I)"),
        (dict(w_ih=z(15, 3)), "w_ih must have shape (4*H, I)"),
        (dict(w_ih=z(16)), "w_ih must have shape (4*H, I)"),
        (dict(b_hh=z(16, 1)), "b_hh must have shape [16], got [16, 1]"),
        (dict(b_ih=z(16, dtype=torch.float64)), "b_ih has dtype Double"),
        (dict(c0=z(2, 4, dtype=torch.int32)), "c0 has dtype Int"),
        (dict(x=z(5, 2, 3, dtype=torch.bool)), "x must be a floating point tensor"),
        (dict(x=z(5, 2, 3, dtype=torch.complex64)), "x must be a floating point tensor"),
        (dict(reset=z(5, 2, dtype=torch.uint8)), "reset must be a bool tensor"),
        (dict(reset=z(2, 5, dtype=torch.bool)), "reset must have shape [5, 2], got [2, 5]"),
        (dict(lengths=torch.tensor([5])), "lengths must be an int64 tensor of shape (2)"),
        (dict(lengths=torch.tensor([[5, 5]])), "lengths must be an int64 tensor of shape (2)"),
        (dict(lengths=torch.tensor([5, -1])), "lengths[1] = -1 is outside [0, T = 5]"),
        (dict(window=-1), "window must be >= 0"),
        (dict(window=-(2**62)), "window must be >= 0"),
    ],
)
def test_direct_forward_checks(change, message):
    with pytest.raises(RuntimeError, match=re.escape(message)):
        torch.ops.rnnkernels.lstm_forward(*fwd_args(**change).values())


def test_direct_forward_refuses_other_float_types():
    a = fwd_args(**{k: v.half() for k, v in fwd_args().items() if isinstance(v, torch.Tensor)})
    with pytest.raises(RuntimeError):
        torch.ops.rnnkernels.lstm_forward(*a.values())


@pytest.mark.parametrize("other", ["h0", "c0", "w_ih", "w_hh", "b_ih", "reset"])
def test_direct_forward_device_mismatch_is_refused(other):
    a = fwd_args(reset=z(5, 2, dtype=torch.bool))
    a[other] = a[other].to("meta")
    with pytest.raises(RuntimeError, match="meta|device"):
        torch.ops.rnnkernels.lstm_forward(*a.values())


def saved_forward(reverse=False, lengths=None, proj=False):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    P = 2 if proj else 4
    a = dict(x=r(5, 2, 3), h0=r(2, P), c0=r(2, 4), w_ih=r(16, 3), w_hh=r(16, P), b_ih=r(16), b_hh=None,
             w_hr=r(2, 4) if proj else None, reset=None, lengths=lengths, window=0, reverse=reverse,
             need_backward=True)  # fmt: skip
    y, hn, cn, gates, cells = torch.ops.rnnkernels.lstm_forward(*a.values())
    b = dict(grad_y=torch.ones_like(y), grad_hn=torch.ones_like(hn), grad_cn=torch.ones_like(cn), x=a["x"],
             h0=a["h0"], c0=a["c0"], w_ih=a["w_ih"], w_hh=a["w_hh"], w_hr=a["w_hr"], reset=None, lengths=lengths,
             y=y, gates=gates, cells=cells, window=0, reverse=reverse, need_dx=True, need_bias=True)  # fmt: skip
    return b


BACKWARD_CASES = [
    (lambda b: dict(grad_y=b["grad_y"][:4]), "grad_y must have shape [5, 2, 4]"),
    (lambda b: dict(grad_y=b["grad_y"].double()), "grad_y has dtype Double"),
    (lambda b: dict(grad_hn=b["grad_hn"][:1]), "grad_hn must have shape [2, 4]"),
    (lambda b: dict(grad_hn=b["grad_hn"].int()), "grad_hn has dtype Int"),
    (lambda b: dict(grad_cn=z(2, 5)), "grad_cn must have shape [2, 4]"),
    (lambda b: dict(y=b["y"][:, :1]), "y must have shape [5, 2, 4]"),
    (lambda b: dict(y=b["y"].double()), "y has dtype Double"),
    (lambda b: dict(gates=b["gates"][:4]), "gates must have shape [5, 2, 16]"),
    (lambda b: dict(gates=b["gates"][..., :8]), "gates must have shape [5, 2, 16]"),
    (lambda b: dict(gates=z(0)), "need_backward=True"),
    (lambda b: dict(gates=b["gates"].double()), "gates has dtype Double"),
    (lambda b: dict(cells=b["cells"][:, :, :3]), "cells must have shape [5, 2, 4]"),
    (lambda b: dict(cells=b["cells"].reshape(2, 5, 4)), "cells must have shape [5, 2, 4]"),
    (lambda b: dict(x=b["x"][:4]), "must have shape"),
    (lambda b: dict(h0=z(3, 4)), "h0 must have shape [2, 4]"),
    (lambda b: dict(w_hr=z(2, 4)), "w_hh must have shape [16, 2]"),
    (lambda b: dict(reset=z(4, 2, dtype=torch.bool)), "reset must have shape [5, 2]"),
    (lambda b: dict(reset=z(5, 2)), "reset must be a bool tensor"),
    (lambda b: dict(lengths=torch.tensor([6, 1])), "lengths[0] = 6 is outside"),
    (lambda b: dict(lengths=torch.tensor([1, 5])), "lengths must be sorted in decreasing order"),
    (lambda b: dict(lengths=torch.tensor([5, 1], dtype=torch.int32)), "lengths must be an int64 tensor"),
    (lambda b: dict(window=-2), "window must be >= 0"),
]


@pytest.mark.parametrize("case", range(len(BACKWARD_CASES)))
@pytest.mark.parametrize("reverse", [False, True])
def test_direct_backward_checks(case, reverse):
    make, message = BACKWARD_CASES[case]
    b = saved_forward(reverse)
    b.update(make(b))
    with pytest.raises(RuntimeError, match=re.escape(message)):
        torch.ops.rnnkernels.lstm_backward(*b.values())


@pytest.mark.parametrize("reverse,proj", list(itertools.product([False, True], [False, True])))
def test_direct_backward_accepts_strided_saved_tensors(reverse, proj):
    """Saved tensors handed back with other strides give the same gradients."""
    b = saved_forward(reverse, proj=proj)
    want = torch.ops.rnnkernels.lstm_backward(*b.values())
    for name in ("grad_y", "y", "gates", "cells", "x"):
        b[name] = b[name].transpose(0, 1).contiguous().transpose(0, 1)
    got = torch.ops.rnnkernels.lstm_backward(*b.values())
    for w, g in zip(want, got):
        assert torch.equal(w, g)


def test_zero_lengths_and_zero_steps_are_fine():
    b = saved_forward(reverse=True, lengths=torch.tensor([3, 0]))
    dx, dh0, dc0, *_ = torch.ops.rnnkernels.lstm_backward(*b.values())
    assert torch.equal(dx[:, 1], torch.zeros(5, 3)) and torch.equal(dh0[1], torch.ones(4))
    a = fwd_args(x=z(0, 2, 3), h0=torch.randn(2, 4), c0=torch.randn(2, 4))
    y, hn, cn, gates, cells = torch.ops.rnnkernels.lstm_forward(*a.values())
    assert y.shape == (0, 2, 4) and torch.equal(hn, a["h0"]) and torch.equal(cn, a["c0"])
    grads_ = torch.ops.rnnkernels.lstm_backward(None, hn, cn, a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], None,
                                                None, None, y, gates, cells, 0, False, True, True)  # fmt: skip
    assert torch.equal(grads_[1], hn) and torch.equal(grads_[3], z(16, 3))


# --- sizes whose allocation fails: RuntimeError, never a crash -----------------

HUGE = 2**40


def huge(*shape):
    """A tensor of `shape` that only exists as a stride-0 view of one zero."""
    return z([1] * len(shape)).expand(*shape)


@pytest.mark.parametrize(
    "change",
    [
        dict(x=huge(HUGE, 2, 3)),  # T * B * 4H elements of gates
        dict(x=huge(2, HUGE, 3), h0=huge(HUGE, 4), c0=huge(HUGE, 4)),  # batch
        # T * B * 4H overflows int64
        dict(x=huge(2**31, 2**31, 1), w_ih=z(16, 1), h0=huge(2**31, 4), c0=huge(2**31, 4)),
        # hidden size (with a projection, so that w_hh itself can exist as a view)
        dict(x=huge(3, 2, 1), w_ih=huge(4 * HUGE, 1), w_hh=huge(4 * HUGE, 1), w_hr=huge(1, HUGE), h0=huge(2, 1),
             c0=huge(2, HUGE), b_ih=None, b_hh=None),  # fmt: skip
        dict(x=z(3).as_strided((2**35, 2**10, 3), (0, 0, 1)), h0=huge(2**10, 4), c0=huge(2**10, 4)),
    ],
)
@pytest.mark.parametrize("need_backward", [True, False])
def test_huge_sizes_raise_runtime_error(change, need_backward):
    a = fwd_args(**change, need_backward=need_backward)
    with pytest.raises(RuntimeError, match="alloc|overflow|memory"):
        torch.ops.rnnkernels.lstm_forward(*a.values())


def test_huge_backward_raises_runtime_error():
    T, B = HUGE, 2
    b = dict(grad_y=huge(T, B, 4), grad_hn=None, grad_cn=None, x=huge(T, B, 3), h0=z(B, 4), c0=z(B, 4),
             w_ih=z(16, 3), w_hh=z(16, 4), w_hr=None, reset=None, lengths=None, y=huge(T, B, 4),
             gates=huge(T, B, 16), cells=huge(T, B, 4), window=0, reverse=True, need_dx=True,
             need_bias=True)  # fmt: skip
    with pytest.raises(RuntimeError, match="alloc|overflow|memory"):
        torch.ops.rnnkernels.lstm_backward(*b.values())


@pytest.mark.parametrize("shape", [(HUGE, 1, 3), (3, HUGE, 3)])
def test_huge_module_input_fails_like_nn_lstm(shape):
    ref, ours = pair32()
    x = huge(*shape)
    want, got = outcome(lambda: ref(x)), outcome(lambda: ours(x))
    assert want[0] is RuntimeError and got[0] is RuntimeError
    assert "allocate" in got[1]
