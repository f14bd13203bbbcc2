"""Hostile and degenerate inputs: the same exception (type and text) as
nn.LSTM where nn.LSTM has one (constructor and forward), a clear error of our
own where it has none, the same result as nn.LSTM where it works, and never a
crash: direct calls of torch.ops.rnnkernels.* with bad arguments and sizes
whose allocation fails raise a RuntimeError that names the argument."""

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
        with pytest.raises(RuntimeError, match=r"rnnkernels\.lstm: [hc]x has dtype \w+ but input has dtype \w+"):
            ours(x, hx)


def test_one_weight_of_another_dtype_is_a_clear_runtime_error():
    ref, ours = pair32(num_layers=2)
    for m in (ref, ours):
        m.weight_hh_l1 = nn.Parameter(m.weight_hh_l1.detach().double())
    x = X(5, 2, 3)
    assert outcome(lambda: ref(x))[0] is RuntimeError
    with pytest.raises(RuntimeError, match="rnnkernels.lstm: weight_hh_l1 has dtype Double but input has dtype Float"):
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
        (
            torch.zeros(2, 5, dtype=torch.bool),
            RuntimeError,
            "reset must have shape (T, B) matching the input, got [2, 5]",
        ),
        (
            torch.zeros(5, 3, dtype=torch.bool),
            RuntimeError,
            "reset must have shape (T, B) matching the input, got [5, 3]",
        ),
        (torch.zeros(5, dtype=torch.bool), RuntimeError, "reset must have shape (T, B) matching the input, got [5]"),
        (
            torch.zeros(5, 2, 1, dtype=torch.bool),
            RuntimeError,
            "reset must have shape (T, B) matching the input, got [5, 2, 1]",
        ),
        (
            torch.zeros(10, dtype=torch.bool)[::2],
            RuntimeError,
            "reset must have shape (T, B) matching the input, got [5]",
        ),
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
        ok = [
            outcome(lambda: ours(packed, reset=torch.zeros(*s, dtype=torch.bool)))[0] == "ok" for s in ((5, 2), (2, 5))
        ]
        layouts.append(ok)
    assert layouts[0] == layouts[1]


@pytest.mark.parametrize("window", [-1, -100, 1.5, True, "2"])
def test_bad_window(window):
    with pytest.raises(ValueError, match="window must be a non-negative int"):
        rnnkernels.LSTM(3, 4, window=window)
    _, ours = pair32()
    with pytest.raises(ValueError, match="window must be a non-negative int"):
        ours(X(5, 2, 3), window=window)


def test_window_beyond_int64_is_refused():
    """The op's window is an int64: larger values are refused up front, and
    the largest one means no truncation (test_window.py)."""
    with pytest.raises(ValueError, match="window must be a non-negative int below 2\\*\\*63"):
        rnnkernels.LSTM(3, 4, window=2**63)
    _, ours = pair32()
    with pytest.raises(ValueError, match="window must be a non-negative int below 2\\*\\*63"):
        ours(X(5, 2, 3), window=2**70)
    ours(X(5, 2, 3), window=2**63 - 1)


CONSTRUCTOR_CASES = [
    dict(input_size=3, hidden_size=0),
    dict(input_size=3, hidden_size=4.0),
    dict(input_size=0, hidden_size=4),
    dict(input_size=3, hidden_size=4, num_layers=0),
    dict(input_size=3, hidden_size=4, proj_size=-1),
    dict(input_size=3, hidden_size=4, proj_size=4),
    dict(input_size=3, hidden_size=4, dropout=1.5),
    dict(input_size=3, hidden_size=4, dropout="x"),
    dict(input_size=3, hidden_size=4, bias="yes"),
]


@pytest.mark.parametrize("kwargs", CONSTRUCTOR_CASES)
def test_constructor_errors_match_nn_lstm(kwargs):
    assert outcome(lambda: rnnkernels.LSTM(**kwargs)) == outcome(lambda: nn.LSTM(**kwargs))


def test_bad_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        rnnkernels.LSTM(3, 4, backend="cudnn")


# --- degenerate sizes: the same result as nn.LSTM ------------------------------


@pytest.mark.parametrize(
    "layers,bidirectional,proj,batch_first", [(1, False, 0, False), (2, True, 0, True), (2, True, 2, False)]
)
def test_empty_batch_like_nn_lstm(layers, bidirectional, proj, batch_first):
    ref, ours = lstm_pair(3, 4, num_layers=layers, bidirectional=bidirectional, proj_size=proj, batch_first=batch_first)
    D = 2 if bidirectional else 1
    x = torch.randn((0, 5, 3) if batch_first else (5, 0, 3), dtype=torch.float64)
    hx = (
        torch.randn(layers * D, 0, proj or 4, dtype=torch.float64),
        torch.randn(layers * D, 0, 4, dtype=torch.float64),
    )
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
# 4 units run on scalars, 16 on whole AVX-512 vectors, 24 on AVX-512 + AVX2.
@pytest.mark.parametrize("H", [4, 16, 24])
def test_non_finite_values_propagate_like_nn_lstm(where, value, dtype, H):
    results = []
    for proj, bidirectional in ((0, False), (2, True)):
        ref, ours = lstm_pair(3, H, num_layers=2, proj_size=proj, bidirectional=bidirectional, dtype=dtype)
        D = 2 if bidirectional else 1
        g = torch.Generator().manual_seed(0)
        x = torch.randn(6, 3, 3, generator=g, dtype=dtype)
        h0 = torch.randn(2 * D, 3, proj or H, generator=g, dtype=dtype)
        c0 = torch.randn(2 * D, 3, H, generator=g, dtype=dtype)
        {"x": x[2, 1], "h0": h0[0, 1], "c0": c0[0, 1]}.get(where, torch.zeros(1))[0] = value
        for m in (ref, ours):
            if where.startswith(("weight", "bias")):
                with torch.no_grad():
                    getattr(m, where)[1] = value
            leaves = [t.clone().requires_grad_() for t in (x, h0, c0)]
            y, (h, c) = m(leaves[0], tuple(leaves[1:]))
            results.append((y, h, c) + grads((y, h, c), leaves + list(m.parameters())))
    tol = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    for want, got in zip(results[0::2], results[1::2]):
        for k, (a, b) in enumerate(zip(want, got)):
            assert torch.equal(a.isnan(), b.isnan()), f"item {k}: NaN positions differ"
            assert torch.equal(a.isinf(), b.isinf()) and torch.equal(a == float("inf"), b == float("inf")), f"item {k}"
            torch.testing.assert_close(b, a, equal_nan=True, **tol)


# --- direct op calls ----------------------------------------------------------

z = torch.zeros


def fwd_args(layers=1, bidirectional=False, proj=0, **change):
    """torch.ops.rnnkernels.lstm's arguments for I=3, H=4, T=5, B=2."""
    D, P = 2 if bidirectional else 1, proj or 4
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    params = []
    for layer in range(layers):
        for _ in range(D):
            params += [r(16, 3 if layer == 0 else D * P), r(16, P), r(16), r(16)] + ([r(P, 4)] if proj else [])
    a = dict(input=r(5, 2, 3), hx=r(layers * D, 2, P), cx=r(layers * D, 2, 4), params=params, batch_sizes=None,
             reset=None, has_biases=True, num_layers=layers, bidirectional=bidirectional, dropout=0.0, train=False,
             window=0)  # fmt: skip
    a.update(change)
    return a


def with_param(k, t, **kw):
    a = fwd_args(**kw)
    a["params"][k] = t
    return a


@pytest.mark.parametrize(
    "args,message",
    [
        (fwd_args(input=z(5, 2, 4)), "weight_ih_l0 must have shape [16, 4], got [16, 3]"),
        (fwd_args(hx=z(1, 3, 4)), "hx must have shape [1, 2, 4], got [1, 3, 4]"),
        (fwd_args(cx=z(1, 2, 5)), "cx must have shape [1, 2, 4], got [1, 2, 5]"),
        (fwd_args(hx=z(1, 2, 4, dtype=torch.float64)), "hx has dtype Double but input has dtype Float"),
        (fwd_args(cx=z(1, 2, 4, dtype=torch.int32)), "cx has dtype Int but input has dtype Float"),
        (with_param(1, z(16, 5)), "weight_hh_l0 must have shape [16, 4], got [16, 5]"),
        (with_param(2, z(15)), "bias_ih_l0 must have shape [16], got [15]"),
        (with_param(3, z(16, 1)), "bias_hh_l0 must have shape [16], got [16, 1]"),
        (with_param(3, z(16, dtype=torch.float64)), "bias_hh_l0 has dtype Double but input has dtype Float"),
        (with_param(0, z(15, 3)), "weight_ih_l0 must have shape (4*hidden_size, input_size), got [15, 3]"),
        (with_param(0, z(0, 3)), "weight_ih_l0 must have shape (4*hidden_size, input_size), got [0, 3]"),
        (with_param(0, z(16)), "weight_ih_l0 must have shape (4*hidden_size, input_size), got [16]"),
        (
            with_param(5, z(16, 3), layers=2, bidirectional=True),
            "weight_hh_l0_reverse must have shape [16, 4], got [16, 3]",
        ),
        (with_param(8, z(16, 3), layers=2, bidirectional=True), "weight_ih_l1 must have shape [16, 8], got [16, 3]"),
        (
            with_param(4, torch.tensor(1.0), proj=2),
            "weight_hr_l0 must have shape (proj_size, hidden_size) with proj_size > 0, got []",
        ),
        (with_param(4, z(2, 3), proj=2), "weight_hr_l0 must have shape [2, 4], got [2, 3]"),
        (fwd_args(params=fwd_args()["params"][:3]), "expected 4 or 5 params for each of the 1 layer-directions"),
        (fwd_args(input=z(5, 2, 3, dtype=torch.bool)), "input must be a floating point tensor, got Bool"),
        (fwd_args(input=z(5, 2, 3, dtype=torch.complex64)), "input must be a floating point tensor, got ComplexFloat"),
        (fwd_args(input=z(5, 2)), "input must be 3-D (T, B, features), got 2-D"),
        (fwd_args(reset=z(5, 2, dtype=torch.uint8)), "reset must be a bool tensor, got Byte"),
        (fwd_args(reset=z(2, 5, dtype=torch.bool)), "reset must have shape [5, 2], got [2, 5]"),
        (
            fwd_args(input=z(7, 3), batch_sizes=torch.tensor([2, 3, 2])),
            "batch_sizes must be positive and non-increasing, got batch_sizes[1] = 3",
        ),
        (
            fwd_args(input=z(7, 3), batch_sizes=torch.tensor([2, 2, 2])),
            "batch_sizes sum to 6 but the packed input has 7 rows",
        ),
        (
            fwd_args(input=z(4, 3), batch_sizes=torch.tensor([[2, 2]])),
            "batch_sizes must be a 1-D int64 tensor on the CPU",
        ),
        (
            fwd_args(input=z(4, 3), batch_sizes=torch.tensor([2, 2], dtype=torch.int32)),
            "batch_sizes must be a 1-D int64",
        ),
        (fwd_args(input=z(4, 3), batch_sizes=torch.tensor([2, 2, 0])), "batch_sizes must be positive"),
        (fwd_args(input=z(5, 2, 3)[0], batch_sizes=None), "input must be 3-D"),
        (fwd_args(window=-1), "window must be >= 0, got -1"),
        (fwd_args(window=-(2**62)), "window must be >= 0"),
        (fwd_args(num_layers=0), "num_layers must be at least 1, got 0"),
        (fwd_args(dropout=-0.5), "dropout must be in [0, 1], got -0.5"),
    ],
)
def test_direct_calls_name_the_bad_argument(args, message):
    with pytest.raises(RuntimeError, match=re.escape("rnnkernels.lstm: ") + ".*" + re.escape(message)):
        torch.ops.rnnkernels.lstm(*args.values())


@pytest.mark.parametrize("other", ["hx", "cx", "params", "reset"])
def test_direct_call_device_mismatch_is_refused(other):
    a = fwd_args(reset=z(5, 2, dtype=torch.bool))
    if other == "params":
        a["params"][1] = a["params"][1].to("meta")
    else:
        a[other] = a[other].to("meta")
    with pytest.raises(RuntimeError, match="is on meta but input is on cpu"):
        torch.ops.rnnkernels.lstm(*a.values())


def saved_forward(**kw):
    """A forward that saves for backward, and the matching backward's arguments."""
    a = fwd_args(**kw)
    output, hy, cy, saved = torch.ops.rnnkernels.lstm_forward(*a.values(), True)
    return dict(grad_output=torch.ones_like(output), grad_hy=torch.ones_like(hy), grad_cy=torch.ones_like(cy), **a,
                output=output, saved=saved, need_input_grad=True, need_weight_grad=True)  # fmt: skip


def _replace_saved(k, make):
    def change(b):
        saved = list(b["saved"])
        saved[k] = make(saved[k])
        return dict(saved=saved)

    return change


BACKWARD_CASES = [
    (lambda b: dict(grad_output=b["grad_output"][:4]), "grad_output must have shape [5, 2, 8]"),
    (lambda b: dict(grad_output=b["grad_output"].double()), "grad_output has dtype Double"),
    (lambda b: dict(grad_hy=b["grad_hy"][:, :1]), "grad_hy must have shape [4, 2, 4]"),
    (lambda b: dict(grad_hy=b["grad_hy"].int()), "grad_hy has dtype Int"),
    (lambda b: dict(grad_cy=z(4, 2, 5)), "grad_cy must have shape [4, 2, 4]"),
    (lambda b: dict(output=b["output"][:, :1]), "output must have shape [5, 2, 8]"),
    (lambda b: dict(output=b["output"].double()), "output has dtype Double"),
    (lambda b: dict(saved=[]), "backward needs the 7 tensors a forward with need_backward=True saves, got 0"),
    (lambda b: dict(saved=b["saved"][:4]), "backward needs the 7 tensors"),
    (_replace_saved(0, lambda t: t[:, :4]), "saved gates must have shape [10, 16]"),
    (_replace_saved(1, lambda t: t.double()), "saved gates has dtype Double"),
    (_replace_saved(2, lambda t: t[..., :3]), "saved cells must have shape [2, 10, 4]"),
    (_replace_saved(3, lambda t: t.reshape(5, 16)), "saved layer output must have shape [10, 8]"),
    (lambda b: dict(hx=z(4, 3, 4)), "hx must have shape [4, 2, 4]"),
    (lambda b: dict(reset=z(4, 2, dtype=torch.bool)), "reset must have shape [5, 2]"),
    (lambda b: dict(reset=z(5, 2)), "reset must be a bool tensor"),
    (lambda b: dict(window=-2), "window must be >= 0"),
    (lambda b: dict(num_layers=1), "expected 4 or 5 params for each of the 2 layer-directions"),
]


@pytest.mark.parametrize("case", range(len(BACKWARD_CASES)))
def test_direct_backward_checks(case):
    make, message = BACKWARD_CASES[case]
    b = saved_forward(layers=2, bidirectional=True)
    b.update(make(b))
    with pytest.raises(RuntimeError, match=re.escape(message)):
        torch.ops.rnnkernels.lstm_backward(*b.values())


@pytest.mark.parametrize("bidirectional,proj", list(itertools.product([False, True], [0, 2])))
def test_direct_backward_accepts_strided_and_expanded_tensors(bidirectional, proj):
    """Tensors handed back with other strides, or gradients autograd made by
    expanding one value, give the same gradients as contiguous ones."""
    b = saved_forward(layers=2, bidirectional=bidirectional, proj=proj)
    want = torch.ops.rnnkernels.lstm_backward(*b.values())
    b["output"] = b["output"].transpose(0, 1).contiguous().transpose(0, 1)
    b["saved"] = [s.transpose(0, -1).contiguous().transpose(0, -1) for s in b["saved"]]
    b["input"] = b["input"].transpose(0, 1).contiguous().transpose(0, 1)
    b["grad_output"] = torch.ones(1, 1, 1).expand(b["output"].shape)
    b["grad_hy"] = torch.ones(1, 1, 1).expand(b["grad_hy"].shape)
    got = torch.ops.rnnkernels.lstm_backward(*b.values())
    for w, g in zip(want[:3] + tuple(want[3]), got[:3] + tuple(got[3])):
        assert torch.equal(w, g)


@pytest.mark.parametrize("need_weight_grad", [True, False])
def test_direct_backward_passes_opcheck(need_weight_grad):
    """The fake kernel's results, weight gradients or none, are the real ones'."""
    b = saved_forward(layers=2, bidirectional=True, proj=2)
    b["need_weight_grad"] = need_weight_grad
    torch.library.opcheck(torch.ops.rnnkernels.lstm_backward.default, tuple(b.values()))
    got = torch.ops.rnnkernels.lstm_backward(*b.values())
    assert len(got[3]) == (len(b["params"]) if need_weight_grad else 0)


def test_zero_steps_and_empty_batches_are_fine():
    a = fwd_args(input=z(0, 2, 3))
    output, hy, cy = torch.ops.rnnkernels.lstm(*a.values())
    assert output.shape == (0, 2, 4) and torch.equal(hy, a["hx"]) and torch.equal(cy, a["cx"])
    b = saved_forward(input=z(0, 2, 3))
    dx, dhx, dcx, dparams = torch.ops.rnnkernels.lstm_backward(*b.values())
    assert torch.equal(dhx, b["grad_hy"]) and torch.equal(dparams[0], z(16, 3))
    a = fwd_args(input=z(5, 0, 3), hx=z(1, 0, 4), cx=z(1, 0, 4))
    assert torch.ops.rnnkernels.lstm(*a.values())[0].shape == (5, 0, 4)


def test_lstm_forward_refuses_to_record_a_gradient():
    """Only rnnkernels::lstm is differentiable; its forward half, called
    directly with tensors that need a gradient, is refused, not recorded
    without one."""
    a = fwd_args()
    a["input"].requires_grad_()
    with pytest.raises(RuntimeError, match="has no gradient of its own; call torch.ops.rnnkernels.lstm"):
        torch.ops.rnnkernels.lstm_forward(*a.values(), True)
    with torch.no_grad():
        assert torch.ops.rnnkernels.lstm_forward(*a.values(), True)[0].grad_fn is None


# --- sizes whose allocation fails: RuntimeError, never a crash -----------------

HUGE = 2**40


def huge(*shape):
    """A tensor of `shape` that only exists as a stride-0 view of one zero."""
    return z([1] * len(shape)).expand(*shape)


@pytest.mark.parametrize(
    "change",
    [
        dict(input=huge(HUGE, 2, 3)),  # T * B * 4H elements of gates
        dict(input=huge(2, HUGE, 3), hx=huge(1, HUGE, 4), cx=huge(1, HUGE, 4)),  # batch
        # T * B * 4H overflows int64
        dict(input=huge(2**31, 2**31, 1), hx=None, cx=None, params=[z(16, 1), z(16, 4), z(16), z(16)]),
        # hidden size (with a projection, so that w_hh itself can exist as a view)
        dict(
            input=huge(3, 2, 1),
            hx=None,
            cx=None,
            has_biases=False,
            params=[huge(4 * HUGE, 1), huge(4 * HUGE, 1), huge(1, HUGE)],
        ),  # fmt: skip
        dict(input=z(3).as_strided((2**35, 2**10, 3), (0, 0, 1)), hx=None, cx=None),
    ],
)
@pytest.mark.parametrize("need_backward", [True, False])
def test_huge_sizes_raise_runtime_error(change, need_backward):
    a = fwd_args(**change)
    with pytest.raises(RuntimeError, match="alloc|overflow|memory"):
        torch.ops.rnnkernels.lstm_forward(*a.values(), need_backward)


def test_huge_backward_raises_runtime_error():
    b = saved_forward()
    T = HUGE
    b.update(input=huge(T, 2, 3), output=huge(T, 2, 4), grad_output=huge(T, 2, 4),
             saved=[huge(2 * T, 16), huge(1, 2 * T, 4)])  # fmt: skip
    with pytest.raises(RuntimeError, match="alloc|overflow|memory"):
        torch.ops.rnnkernels.lstm_backward(*b.values())


@pytest.mark.parametrize("shape", [(HUGE, 1, 3), (3, HUGE, 3)])
def test_huge_module_input_fails_like_nn_lstm(shape):
    ref, ours = pair32()
    x = huge(*shape)
    want, got = outcome(lambda: ref(x)), outcome(lambda: ours(x))
    assert want[0] is RuntimeError and got[0] is RuntimeError
    assert "allocate" in got[1]
