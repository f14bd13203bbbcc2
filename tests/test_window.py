"""window=k gives exactly the gradients of running the chunks [0,k), [k,2k), ...
one after another with the state detached between them, losses summed
(nn.LSTM run that way is the oracle), for the fused op and for the reference
that other tests use as their oracle. Reverse directions and resets with
windows are checked against a step-by-step oracle in test_reset.py."""

import pytest
import torch

from conftest import ChunkedLSTM, assert_close_all, lstm_pair, requires_extension

pytestmark = requires_extension

T = 10


@pytest.mark.parametrize("k", [1, 2, 3, 5, 10, 15])
@pytest.mark.parametrize("layers,proj,batch_first", [(1, 0, False), (2, 0, True), (3, 3, False)])
@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_window_equals_detached_chunks(k, layers, proj, batch_first, backend):
    ref, ours = lstm_pair(4, 6, num_layers=layers, proj_size=proj, batch_first=batch_first, backend=backend)
    g = torch.Generator().manual_seed(k)
    x = torch.randn((3, T, 4) if batch_first else (T, 3, 4), dtype=torch.float64, generator=g)
    hx = (torch.randn(layers, 3, proj or 6, dtype=torch.float64, generator=g),
          torch.randn(layers, 3, 6, dtype=torch.float64, generator=g))  # fmt: skip
    weights = [
        torch.randn(s, dtype=torch.float64, generator=g) for s in ((*x.shape[:2], proj or 6), hx[0].shape, hx[1].shape)
    ]

    def gradients(run, module):
        xi = x.clone().requires_grad_()
        hi = tuple(h.clone().requires_grad_() for h in hx)
        y, (h_n, c_n) = run(xi, hi)
        loss = sum((o * w).sum() for o, w in zip((y, h_n, c_n), weights))
        return [y, h_n, c_n, *torch.autograd.grad(loss, [xi, *hi, *module.parameters()])]

    want = gradients(ChunkedLSTM(ref, k), ref)
    got = gradients(lambda xi, hi: ours(xi, hi, window=k), ours)
    assert_close_all(got, want, rtol=1e-9, atol=1e-10)


def test_window_keeps_forward_values():
    _, ours = lstm_pair(4, 6, num_layers=2, bidirectional=True)
    x = torch.randn(T, 3, 4, dtype=torch.float64)
    y0, (h0, c0) = ours(x)
    y3, (h3, c3) = ours(x, window=3)
    assert torch.equal(y0, y3) and torch.equal(h0, h3) and torch.equal(c0, c3)


def test_module_default_window_and_override():
    _, ours = lstm_pair(4, 6)
    ours.window = 2
    x = torch.randn(T, 2, 4, dtype=torch.float64, requires_grad=True)
    (g_default,) = torch.autograd.grad(ours(x)[0][-1].sum(), x)
    (g_two,) = torch.autograd.grad(ours(x, window=2)[0][-1].sum(), x)
    (g_full,) = torch.autograd.grad(ours(x, window=0)[0][-1].sum(), x)
    assert torch.equal(g_default, g_two)
    assert g_two[:8].abs().sum() == 0  # the last output only sees its own window [8, 10)
    assert g_full[:8].abs().sum() > 0


def test_window_longer_than_the_sequence_truncates_nothing():
    _, ours = lstm_pair(4, 6, num_layers=2)
    x = torch.randn(T, 2, 4, dtype=torch.float64, requires_grad=True)
    (g_off,) = torch.autograd.grad(ours(x)[0].square().sum(), x)
    for k in (T, T + 1, 2**62):
        (g_k,) = torch.autograd.grad(ours(x, window=k)[0].square().sum(), x)
        assert torch.equal(g_k, g_off)
