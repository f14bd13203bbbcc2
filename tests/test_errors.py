"""Bad input raises what nn.LSTM raises, with the same type and message; our
own checks (window, reset, direct op calls) raise clear errors, never crash."""

import re

import pytest
import torch
from torch import nn

import rnnkernels
from conftest import lstm_pair, requires_extension


def z(*shape, dtype=torch.float32):
    return torch.zeros(*shape, dtype=dtype)


FORWARD_CASES = {
    "wrong input size": lambda: (z(5, 2, 4), None),
    "dtype mismatch": lambda: (z(5, 2, 3, dtype=torch.float64), None),
    "integer input": lambda: (torch.zeros(5, 2, 3, dtype=torch.long), None),
    "4-D input": lambda: (z(5, 2, 3, 1), None),
    "1-D input": lambda: (z(3), None),
    "wrong h batch": lambda: (z(5, 2, 3), (z(1, 3, 4), z(1, 2, 4))),
    "wrong c size": lambda: (z(5, 2, 3), (z(1, 2, 4), z(1, 2, 5))),
    "wrong layer count": lambda: (z(5, 2, 3), (z(2, 2, 4), z(2, 2, 4))),
    "2-D state for 3-D input": lambda: (z(5, 2, 3), (z(2, 4), z(2, 4))),
    "3-D state for 2-D input": lambda: (z(5, 3), (z(1, 2, 4), z(1, 2, 4))),
    "empty sequence": lambda: (z(0, 2, 3), None),
}


def raised(fn):
    with pytest.raises(Exception) as info:
        fn()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("case", list(FORWARD_CASES))
def test_forward_errors_match_nn_lstm(case):
    ref, ours = lstm_pair(3, 4, dtype=torch.float32)
    x, hx = FORWARD_CASES[case]()
    assert raised(lambda: ours(x, hx)) == raised(lambda: ref(x, hx))


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
    assert raised(lambda: rnnkernels.LSTM(**kwargs)) == raised(lambda: nn.LSTM(**kwargs))


def test_bad_window_and_backend():
    with pytest.raises(ValueError, match="window must be a non-negative int"):
        rnnkernels.LSTM(3, 4, window=-1)
    m = rnnkernels.LSTM(3, 4)
    with pytest.raises(ValueError, match="window must be a non-negative int"):
        m(z(5, 2, 3), window=-2)
    with pytest.raises(ValueError, match="window must be a non-negative int"):
        m(z(5, 2, 3), window=1.5)
    with pytest.raises(ValueError, match="backend must be one of"):
        rnnkernels.LSTM(3, 4, backend="cudnn")


def test_bad_reset_mask():
    m = rnnkernels.LSTM(3, 4)
    with pytest.raises(TypeError, match="reset must be a bool tensor"):
        m(z(5, 2, 3), reset=torch.zeros(5, 2))
    with pytest.raises(RuntimeError, match=re.escape("reset must have shape (T, B) matching the input, got [2, 5]")):
        m(z(5, 2, 3), reset=torch.zeros(2, 5, dtype=torch.bool))


@requires_extension
@pytest.mark.parametrize(
    "change,message",
    [
        (dict(x=z(5, 2, 4)), "w_ih must have shape"),
        (dict(h0=z(3, 4)), "h0 must have shape"),
        (dict(c0=z(2, 5)), "c0 must have shape"),
        (dict(w_hh=z(16, 5)), "w_hh must have shape"),
        (dict(b_ih=z(15)), "b_ih must have shape"),
        (dict(h0=z(2, 4, dtype=torch.float64)), "h0 has dtype Double but x has dtype Float"),
        (dict(x=torch.zeros(5, 2, 3, dtype=torch.long)), "x must be a floating point tensor"),
        (dict(reset=torch.zeros(5, 2)), "reset must be a bool tensor"),
        (dict(reset=torch.zeros(4, 2, dtype=torch.bool)), "reset must have shape"),
        (dict(lengths=torch.tensor([2, 5])), "lengths must be sorted in decreasing order"),
        (dict(lengths=torch.tensor([6, 5])), "is outside"),
        (dict(lengths=torch.tensor([5, 5], dtype=torch.int32)), "lengths must be an int64 tensor"),
        (dict(window=-1), "window must be >= 0"),
        (dict(x=z(5, 2)), "x must be 3-D"),
    ],
)
def test_direct_op_calls_check_arguments(change, message):
    a = dict(x=z(5, 2, 3), h0=z(2, 4), c0=z(2, 4), w_ih=z(16, 3), w_hh=z(16, 4), b_ih=z(16), b_hh=z(16),
             w_hr=None, reset=None, lengths=None, window=0, reverse=False, need_backward=True)  # fmt: skip
    a.update(change)
    with pytest.raises(RuntimeError, match=re.escape(message)):
        torch.ops.rnnkernels.lstm_forward(*a.values())


@requires_extension
def test_backward_without_saved_activations_is_refused():
    x, h, c = z(5, 2, 3), z(2, 4), z(2, 4)
    w_ih, w_hh = z(16, 3), z(16, 4)
    y, hn, cn, gates, cells = torch.ops.rnnkernels.lstm_forward(x, h, c, w_ih, w_hh, None, None, None, None, None, 0, False, False)
    with pytest.raises(RuntimeError, match="need_backward=True"):
        torch.ops.rnnkernels.lstm_backward(y, None, None, x, h, c, w_ih, w_hh, None, None, None, y, gates, cells, 0, False, True, False)
