"""reset masks (and windows) against a step-by-step nn.LSTMCell oracle in float64.

The oracle runs one nn.LSTMCell per layer and direction, one step at a time,
with the LSTM's own parameters, and multiplies the state by keep = ~reset
before the steps where a document boundary falls. Gradients of both sides are
taken with respect to the same leaves, so they must agree to rounding.
"""

import pytest
import torch
from torch import nn
from torch.func import functional_call

import rnnkernels
from rnnkernels import _extension

pytestmark = pytest.mark.usefixtures("one_thread")

BACKENDS = ["reference"] + (["fused"] if _extension.cpu_extension() else [])


def oracle(lstm, x, h0, c0, reset, window=0):
    """Time-major x (T, B, I); reset (T, B). Returns out, (h_n, c_n)."""
    T = x.shape[0]
    D = 2 if lstm.bidirectional else 1
    h_n, c_n = [], []
    for layer in range(lstm.num_layers):
        outs = []
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            cell = nn.LSTMCell(x.shape[2], lstm.hidden_size, bias=lstm.bias, dtype=x.dtype)
            params = {"weight_ih": getattr(lstm, "weight_ih" + sfx), "weight_hh": getattr(lstm, "weight_hh" + sfx)}
            if lstm.bias:
                params.update(bias_ih=getattr(lstm, "bias_ih" + sfx), bias_hh=getattr(lstm, "bias_hh" + sfx))
            k = layer * D + d
            h, c = h0[k], c0[k]
            ys = [None] * T
            times = range(T - 1, -1, -1) if d else range(T)
            for s, t in enumerate(times):
                # The boundary crossed into time t: t itself going forward, t + 1 going back.
                boundary = t + 1 if d else t
                if s > 0 and window and boundary % window == 0:
                    h, c = h.detach(), c.detach()
                if boundary < T and not (d and s == 0):
                    keep = (~reset[boundary]).to(x.dtype)[:, None]
                    h, c = h * keep, c * keep
                h, c = functional_call(cell, params, (x[t], (h, c)))
                ys[t] = h
            outs.append(torch.stack(ys))
            h_n.append(h)
            c_n.append(c)
        x = torch.cat(outs, 2)
    return x, (torch.stack(h_n), torch.stack(c_n))


def _setup(num_layers, bidirectional, backend, T=7, B=3, I=4, H=5, seed=0, p_reset=0.25):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    lstm = rnnkernels.LSTM(I, H, num_layers, bidirectional=bidirectional, dtype=torch.float64, backend=backend)
    D = 2 if bidirectional else 1
    x = torch.randn(T, B, I, dtype=torch.float64, generator=g, requires_grad=True)
    h0 = torch.randn(num_layers * D, B, H, dtype=torch.float64, generator=g, requires_grad=True)
    c0 = torch.randn(num_layers * D, B, H, dtype=torch.float64, generator=g, requires_grad=True)
    reset = torch.rand(T, B, generator=g) < p_reset
    reset[0, 0] = True  # h0 of sample 0 must be wiped
    reset[3, 1] = True
    weights = [torch.randn(T, B, D * H, dtype=torch.float64, generator=g)] + [
        torch.randn(num_layers * D, B, H, dtype=torch.float64, generator=g) for _ in range(2)
    ]
    return lstm, x, h0, c0, reset, weights


def _loss(out, hn, cn, weights):
    return (out * weights[0]).sum() + (hn * weights[1]).sum() + (cn * weights[2]).sum()


def _check(lstm, x, h0, c0, reset, weights, window=0):
    leaves = [x, h0, c0, *lstm.parameters()]
    out, (hn, cn) = lstm(x, (h0, c0), reset=reset, window=window)
    got = torch.autograd.grad(_loss(out, hn, cn, weights), leaves)
    ref_out, (ref_hn, ref_cn) = oracle(lstm, x, h0, c0, reset, window)
    want = torch.autograd.grad(_loss(ref_out, ref_hn, ref_cn, weights), leaves)
    for a, b in [(out, ref_out), (hn, ref_hn), (cn, ref_cn)]:
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    names = ["x", "h0", "c0"] + [n for n, _ in lstm.named_parameters()]
    for name, a, b in zip(names, got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m: f"grad of {name}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, False), (1, True), (2, True)])
def test_reset_matches_step_oracle(backend, num_layers, bidirectional):
    _check(*_setup(num_layers, bidirectional, backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("num_layers,bidirectional", [(2, False), (2, True)])
@pytest.mark.parametrize("window", [2, 3])
def test_reset_with_window_matches_step_oracle(backend, num_layers, bidirectional, window):
    _check(*_setup(num_layers, bidirectional, backend, T=8, seed=1), window=window)


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_false_reset_is_no_reset(backend):
    lstm, x, h0, c0, _, _ = _setup(2, True, backend)
    none = torch.zeros(x.shape[:2], dtype=torch.bool)
    out_a, (h_a, c_a) = lstm(x, (h0, c0))
    out_b, (h_b, c_b) = lstm(x, (h0, c0), reset=none)
    # Equal up to rounding: the masked path may take a different matmul kernel.
    torch.testing.assert_close(out_a, out_b, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close((h_a, c_a), (h_b, c_b), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reset_restarts_the_sample(backend):
    """After a reset at step t a sample's outputs are those of a fresh run from step t."""
    lstm, x, h0, c0, _, _ = _setup(2, False, backend)
    reset = torch.zeros(x.shape[:2], dtype=torch.bool)
    reset[4, 1] = True
    with torch.no_grad():
        out, _ = lstm(x, (h0, c0), reset=reset)
        fresh, _ = lstm(x[4:, 1:2])
        torch.testing.assert_close(out[4:, 1:2], fresh, rtol=1e-12, atol=1e-12)
        plain, _ = lstm(x, (h0, c0))
        torch.testing.assert_close(out[:4], plain[:4], rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(out[:, [0, 2]], plain[:, [0, 2]], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reset_batch_first_layout(backend):
    lstm, x, h0, c0, reset, weights = _setup(2, True, backend)
    bf = rnnkernels.LSTM(4, 5, 2, bidirectional=True, batch_first=True, dtype=torch.float64, backend=backend)
    bf.load_state_dict(lstm.state_dict())
    with torch.no_grad():
        out, (hn, cn) = lstm(x, (h0, c0), reset=reset)
        out_bf, (hn_bf, cn_bf) = bf(x.transpose(0, 1), (h0, c0), reset=reset.t())
    torch.testing.assert_close(out_bf.transpose(0, 1), out, rtol=0, atol=0)
    torch.testing.assert_close((hn_bf, cn_bf), (hn, cn), rtol=0, atol=0)
