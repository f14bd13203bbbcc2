"""The fused op itself: opcheck, gradcheck, and agreement with the reference
implementation over every flag (window, reset, lengths, reverse, projection)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import assert_close_all, grads, requires_extension
from rnnkernels import ops, reference

pytestmark = requires_extension


def make_args(T, B, I, H, P=0, bias=True, reset_p=0.0, lengths=None, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: (torch.randn(*s, generator=g, dtype=dtype) * 0.5).requires_grad_()  # noqa: E731
    Hp = P or H
    args = dict(
        x=r(T, B, I),
        h0=r(B, Hp),
        c0=r(B, H),
        w_ih=r(4 * H, I),
        w_hh=r(4 * H, Hp),
        b_ih=r(4 * H) if bias else None,
        b_hh=r(4 * H) if bias else None,
        w_hr=r(P, H) if P else None,
        reset=(torch.rand(T, B, generator=g) < reset_p) if reset_p else None,
        lengths=None if lengths is None else torch.tensor(lengths, dtype=torch.long),
    )
    return args


def leaves(args):
    return [v for v in args.values() if isinstance(v, torch.Tensor) and v.requires_grad]


def positional(args, window=0, reverse=False, need_backward=True):
    a = args
    return (a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], a["w_hr"], a["reset"], a["lengths"],
            window, reverse, need_backward)  # fmt: skip


CASES = [
    dict(),
    dict(bias=False),
    dict(P=2),
    dict(reset_p=0.3),
    dict(lengths=[5, 3, 3, 1]),
    dict(P=2, reset_p=0.3, lengths=[5, 4, 2, 0]),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("window", [0, 2])
def test_opcheck(case, reverse, window):
    args = make_args(5, 4, 3, 4, **case)
    torch.library.opcheck(torch.ops.rnnkernels.lstm_forward.default, positional(args, window, reverse))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_op(case, reverse):
    args = make_args(5, 4, 3, 3, **case)

    def fn(*ts):
        a = dict(args)
        for k, t in zip([k for k, v in args.items() if isinstance(v, torch.Tensor) and v.requires_grad], ts):
            a[k] = t
        return ops.lstm_layer(**a, reverse=reverse)

    assert torch.autograd.gradcheck(fn, leaves(args), eps=1e-6, atol=1e-7)


def test_gradcheck_module_weights_as_inputs():
    import rnnkernels

    torch.manual_seed(0)
    m = rnnkernels.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, dtype=torch.float64, backend="fused")
    names = [n for n, _ in m.named_parameters()]
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True)

    def fn(x, h0, c0, *weights):
        y, (h, c) = torch.func.functional_call(m, dict(zip(names, weights)), (x, (h0, c0)))
        return y, h, c

    assert torch.autograd.gradcheck(fn, (x, h0, c0, *[p.detach().requires_grad_() for p in m.parameters()]))


def compare_with_reference(args, window, reverse, tol):
    out_f = ops.lstm_layer(**args, window=window, reverse=reverse)
    out_r = reference.lstm_layer(**args, window=window, reverse=reverse)
    assert_close_all(out_f, out_r, **tol)
    assert_close_all(grads(out_f, leaves(args)), grads(out_r, leaves(args)), **tol)


@given(
    T=st.integers(1, 7),
    B=st.integers(1, 5),
    I=st.integers(1, 6),
    H=st.integers(1, 6),
    proj=st.booleans(),
    bias=st.booleans(),
    window=st.integers(0, 8),
    reverse=st.booleans(),
    reset_p=st.sampled_from([0.0, 0.2, 0.6]),
    ragged=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fused_matches_reference(T, B, I, H, proj, bias, window, reverse, reset_p, ragged, seed):
    lengths = None
    if ragged:
        g = torch.Generator().manual_seed(seed)
        lengths = sorted(torch.randint(0, T + 1, (B,), generator=g).tolist(), reverse=True)
    P = max(1, H - 1) if proj and H > 1 else 0
    args = make_args(T, B, I, H, P=P, bias=bias, reset_p=reset_p, lengths=lengths, seed=seed)
    compare_with_reference(args, window, reverse, dict(rtol=1e-9, atol=1e-10))


def test_float32_matches_reference():
    args = make_args(9, 5, 6, 7, P=3, reset_p=0.2, lengths=[9, 7, 7, 2, 1], dtype=torch.float32)
    compare_with_reference(args, 3, True, dict(rtol=1e-4, atol=1e-5))


def test_inference_saves_nothing():
    args = make_args(5, 3, 4, 6)
    with torch.no_grad():
        y, h, c, gates, cells = torch.ops.rnnkernels.lstm_forward(*positional(args, need_backward=False))
    assert gates.numel() == 0 and cells.numel() == 0
    y_ref, _, _ = reference.lstm_layer(**args)
    torch.testing.assert_close(y, y_ref.detach())


def test_padding_positions_are_zero():
    args = make_args(6, 3, 2, 4, lengths=[6, 2, 0])
    y, h, c = ops.lstm_layer(**args)
    assert y[2:, 1].abs().sum() == 0 and y[:, 2].abs().sum() == 0
    torch.testing.assert_close(h[2], args["h0"][2])  # a sample with no steps keeps its state
