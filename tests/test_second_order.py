"""Second-order gradients (gradient penalties, Hessian-vector products,
double backward) are right, for every configuration nn.LSTM supports and
for resets and windows, which it has not.

The oracles: gradgradcheck in float64; nn.LSTM with oneDNN off (its generic
path is made of differentiable ops); the step-by-step nn.LSTMCell oracle of
test_reset.py for resets; nn.LSTM run over detached chunks for windows. Also
ported here, on rnnkernels.LSTM: PyTorch's own test_LSTM_grad_and_gradgrad,
the gradgradcheck of every nn.LSTM sample in its module database, and the
gradient-penalty check of test_LSTM_differentiable_backward_using_oneDNN.
"""

import itertools
from contextlib import nullcontext

import pytest
import torch
from test_reset import oracle as step_oracle
from torch import nn
from torch.autograd import gradcheck, gradgradcheck
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkernels
from conftest import ChunkedLSTM, assert_close_all, lstm_pair, requires_extension

pytestmark = [requires_extension, pytest.mark.usefixtures("one_thread")]

F64 = dict(rtol=1e-9, atol=1e-10)


def generic_path():
    """nn.LSTM's differentiable path: oneDNN off."""
    return torch.backends.mkldnn.flags(enabled=False)


def functional(m, packed_lengths=None, **kwargs):
    """(x, h0, c0, *weights) -> outputs of m, for gradcheck."""
    names = [n for n, _ in m.named_parameters()]

    def fn(x, h0, c0, *weights):
        inp = pack_padded_sequence(x, packed_lengths, enforce_sorted=False) if packed_lengths is not None else x
        y, (h, c) = torch.func.functional_call(m, dict(zip(names, weights)), (inp, (h0, c0)), kwargs)
        return (y.data if packed_lengths is not None else y), h, c

    return fn


def inputs(m, T=3, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    D = 2 if m.bidirectional else 1
    P = m.proj_size or m.hidden_size
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()  # noqa: E731
    return [r(T, B, m.input_size), r(m.num_layers * D, B, P), r(m.num_layers * D, B, m.hidden_size),
            *[p.detach().clone().requires_grad_() for p in m.parameters()]]  # fmt: skip


FEATURES = {
    "stack": dict(num_layers=2),
    "bidirectional": dict(bidirectional=True),
    "proj": dict(proj_size=2, num_layers=2),
    "no bias": dict(bias=False, bidirectional=True),
    "packed": dict(bidirectional=True, packed=True),
    "reset": dict(num_layers=2, bidirectional=True, reset=True),
}


@pytest.mark.parametrize("feature", list(FEATURES))
def test_gradgradcheck(feature):
    cfg = dict(FEATURES[feature])
    packed, reset = cfg.pop("packed", False), cfg.pop("reset", False)
    torch.manual_seed(0)
    m = rnnkernels.LSTM(2, 3, dtype=torch.float64, **cfg)
    kwargs = dict(reset=torch.tensor([[False, True], [True, False], [False, False]])) if reset else {}
    fn = functional(m, torch.tensor([3, 2]) if packed else None, **kwargs)
    args = inputs(m)
    assert gradcheck(fn, args, fast_mode=True)
    assert gradgradcheck(fn, args, fast_mode=True)


def test_gradgradcheck_with_dropout_between_layers():
    """The masks drawn in the forward are the ones the double backward uses."""
    torch.manual_seed(0)
    m = rnnkernels.LSTM(2, 3, num_layers=3, dropout=0.5, dtype=torch.float64)
    fn = functional(m)

    def seeded(*args):
        torch.manual_seed(7)  # the same masks in every call gradgradcheck makes
        return fn(*args)

    assert gradgradcheck(seeded, inputs(m), fast_mode=True)


def penalty_and_hvp(m, x, hx, kwargs=None, oneDNN_off=True):
    """The two uses of second-order gradients: a gradient penalty on the input
    gradient (its gradient with respect to the weights) and a Hessian-vector
    product of the loss with respect to the weights."""
    kwargs = kwargs or {}
    params = list(m.parameters())
    with generic_path() if oneDNN_off else nullcontext():
        y, (h, c) = m(x, hx, **kwargs)
        loss = (y.square().sum() + h.sum() + (c * c).sum()) / 2
        gx, *gp = torch.autograd.grad(loss, [x, *params], create_graph=True)
        penalty = torch.autograd.grad(gx.square().sum(), params, retain_graph=True)
        v = [
            torch.randn(p.shape, generator=torch.Generator().manual_seed(i), dtype=p.dtype)
            for i, p in enumerate(params)
        ]
        hvp = torch.autograd.grad(gp, params, v)
    return [*penalty, *hvp]


@pytest.mark.parametrize(
    "cfg", [dict(num_layers=2, bidirectional=True), dict(num_layers=2, proj_size=2, batch_first=True)]
)
def test_penalty_and_hvp_match_nn_lstm(cfg):
    ref, ours = lstm_pair(3, 4, **cfg)
    g = torch.Generator().manual_seed(0)
    D = 2 if ours.bidirectional else 1
    x = torch.randn(4, 3, 3, dtype=torch.float64, generator=g).requires_grad_()
    hx = (torch.randn(2 * D, 4 if cfg.get("batch_first") else 3, ours.proj_size or 4, dtype=torch.float64, generator=g),
          torch.randn(2 * D, 4 if cfg.get("batch_first") else 3, 4, dtype=torch.float64, generator=g))  # fmt: skip
    assert_close_all(penalty_and_hvp(ours, x, hx), penalty_and_hvp(ref, x, hx), **F64)


def test_input_gradient_penalty_of_a_frozen_lstm_matches_nn_lstm():
    """No parameter needs a gradient, so the first-order backward returns no
    weight gradients; the second order is then taken with respect to the
    input alone."""
    ref, ours = lstm_pair(3, 4, num_layers=2, bidirectional=True)
    results = []
    for m in (ref, ours):
        m.requires_grad_(False)
        x = torch.randn(5, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
        with generic_path():
            (gx,) = torch.autograd.grad(m(x)[0].square().sum(), x, create_graph=True)
            results.append([gx.detach(), *torch.autograd.grad(gx.square().sum(), x)])
    assert_close_all(results[1], results[0], **F64)


def test_penalty_and_hvp_with_resets_match_the_step_oracle():
    torch.manual_seed(0)
    m = rnnkernels.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 2, 3, dtype=torch.float64, generator=g).requires_grad_()
    hx = (
        torch.randn(4, 2, 4, dtype=torch.float64, generator=g),
        torch.randn(4, 2, 4, dtype=torch.float64, generator=g),
    )
    reset = torch.tensor([[True, False], [False, False], [False, True], [True, False], [False, False]])

    class Oracle(nn.Module):
        def __init__(self, lstm):
            super().__init__()
            self.lstm = lstm

        def forward(self, x, hx, reset):
            return step_oracle(self.lstm, x, hx[0], hx[1], reset)

    got = penalty_and_hvp(m, x, hx, dict(reset=reset))
    want = penalty_and_hvp(Oracle(m), x, hx, dict(reset=reset))
    assert_close_all(got, want, **F64)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_penalty_and_hvp_with_a_window_match_detached_chunks(k):
    ref, ours = lstm_pair(3, 4, num_layers=2, proj_size=2)
    g = torch.Generator().manual_seed(k)
    x = torch.randn(7, 2, 3, dtype=torch.float64, generator=g).requires_grad_()
    hx = (
        torch.randn(2, 2, 2, dtype=torch.float64, generator=g),
        torch.randn(2, 2, 4, dtype=torch.float64, generator=g),
    )
    got = penalty_and_hvp(ours, x, hx, dict(window=k))
    want = penalty_and_hvp(ChunkedLSTM(ref, k), x, hx)
    assert_close_all(got, want, **F64)


def test_packed_penalty_matches_nn_lstm():
    ref, ours = lstm_pair(3, 4, num_layers=2, bidirectional=True, proj_size=3)
    x = torch.randn(5, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([2, 5, 3])
    results = []
    for m in (ref, ours):
        xi = x.clone().requires_grad_()
        with generic_path():
            y, (h, c) = m(pack_padded_sequence(xi, lengths, enforce_sorted=False))
            (gx,) = torch.autograd.grad(y.data.square().sum() + h.sum() + c.sum(), xi, create_graph=True)
            results.append(torch.autograd.grad(gx.square().sum(), [xi, *m.parameters()]))
    assert_close_all(results[1], results[0], **F64)


# --- PyTorch's own tests, on rnnkernels.LSTM -----------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_LSTM_grad_and_gradgrad(bias):  # noqa: N802 - PyTorch's name
    hsize = 4
    inp = torch.rand(1, 3, hsize, dtype=torch.float64, requires_grad=True)
    mod = rnnkernels.LSTM(hsize, hsize, bias=bias).to(torch.float64)

    def flat(x):
        out, (h, c) = mod(x)
        return out, h, c

    assert gradcheck(flat, inp, check_batched_grad=False)
    assert gradgradcheck(flat, inp, check_batched_grad=False)


def _module_db_samples():
    """The nn.LSTM samples of PyTorch's module database
    (common_modules.module_inputs_torch_nn_LSTM), written out: importing that
    module would freeze torch.backends' flags for the whole test session."""
    samples = []
    flags = itertools.product((False, True), (False, True), (False, True), (0, 2))
    for bias, batch_first, bidirectional, proj in flags:
        ctor = dict(input_size=2, hidden_size=3, num_layers=2, proj_size=proj, batch_first=batch_first, bias=bias)
        ctor["bidirectional"] = bidirectional
        D, P = 2 if bidirectional else 1, proj or 3
        samples.append((ctor, (2, 2), None))
        samples.append((ctor, (3, 2), ((2 * D, P), (2 * D, 3))))
    return samples


SAMPLES = _module_db_samples()


@pytest.mark.parametrize("k", range(len(SAMPLES)))
def test_gradgrad_nn_LSTM_module_db_samples(k):  # noqa: N802 - PyTorch's name
    ctor, x_shape, hx_shapes = SAMPLES[k]
    torch.manual_seed(k)
    m = rnnkernels.LSTM(**ctor).to(torch.float64)
    names = [n for n, _ in m.named_parameters()]
    make = lambda s: torch.randn(s, dtype=torch.float64, requires_grad=True)  # noqa: E731
    x = make(x_shape)
    hx = tuple(make(s) for s in hx_shapes) if hx_shapes else None
    leaves = [x, *(hx or ()), *[p.detach().requires_grad_() for p in m.parameters()]]
    n_state = len(hx or ())

    def fn(x, *ts):
        state = tuple(ts[:n_state]) if n_state else None
        out, (h, c) = torch.func.functional_call(m, dict(zip(names, ts[n_state:])), (x, state))
        return out, h, c

    assert gradcheck(fn, leaves, check_batched_grad=False, fast_mode=True)
    assert gradgradcheck(fn, leaves, check_batched_grad=False, fast_mode=True)


def test_LSTM_differentiable_backward_like_onednn():  # noqa: N802 - PyTorch's name
    """float32, batch_first, 2 layers: a gradient penalty through the input
    gradient, against nn.LSTM's differentiable generic path."""
    ref, ours = lstm_pair(10, 6, num_layers=2, batch_first=True, dtype=torch.float32)
    x = torch.randn(3, 5, 10, generator=torch.Generator().manual_seed(0))
    results = []
    for m in (ref, ours):
        xi = x.clone().requires_grad_()
        with generic_path():
            out, _ = m(xi)
            (gx,) = torch.autograd.grad(out.sum(), xi, create_graph=True)
            (gx.square().sum() + out.square().sum()).backward()
        results.append([xi.grad, *[p.grad for p in m.parameters()]])
    assert_close_all(results[1], results[0], rtol=1e-4, atol=1e-5)


def test_third_order_is_refused_or_right():
    """Beyond second order: the gradient is computed, never silently missing."""
    torch.manual_seed(0)
    m = rnnkernels.LSTM(2, 3, dtype=torch.float64)
    x = torch.randn(3, 1, 2, dtype=torch.float64, requires_grad=True)
    (g1,) = torch.autograd.grad(m(x)[0].sum(), x, create_graph=True)
    (g2,) = torch.autograd.grad(g1.square().sum(), x, create_graph=True)
    (g3,) = torch.autograd.grad(g2.sum(), x)
    ref = rnnkernels.LSTM(2, 3, dtype=torch.float64, backend="reference")
    ref.load_state_dict(m.state_dict())
    (r1,) = torch.autograd.grad(ref(x)[0].sum(), x, create_graph=True)
    (r2,) = torch.autograd.grad(r1.square().sum(), x, create_graph=True)
    (r3,) = torch.autograd.grad(r2.sum(), x)
    torch.testing.assert_close(g3, r3, **F64)
