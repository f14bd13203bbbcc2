"""window=k gives exactly the gradients of running the chunks [0,k), [k,2k), ...
one after another with the state detached between them, losses summed."""

import pytest
import torch

from conftest import assert_close_all, lstm_pair, requires_extension

pytestmark = requires_extension

T = 10


def chunked_oracle(ref, x, hx, k, weights):
    """nn.LSTM over chunks of k steps, detaching the carried state."""
    outs, state = [], hx
    for start in range(0, T, k):
        y, state = ref(x[start : start + k], state)
        outs.append(y)
        state = tuple(s.detach() for s in state)
    y = torch.cat(outs)
    return (y * weights).sum()


@pytest.mark.parametrize("k", [1, 2, 3, 5, 10, 15])
@pytest.mark.parametrize("layers,proj", [(1, 0), (2, 0), (2, 3)])
def test_window_equals_detached_chunks(k, layers, proj):
    ref, ours = lstm_pair(4, 6, num_layers=layers, proj_size=proj)
    x = torch.randn(T, 3, 4, dtype=torch.float64)
    hx = (torch.randn(layers, 3, proj or 6, dtype=torch.float64), torch.randn(layers, 3, 6, dtype=torch.float64))
    weights = torch.randn(T, 3, proj or 6, dtype=torch.float64)

    def leaves(m):
        xi = x.clone().requires_grad_()
        hi = tuple(h.clone().requires_grad_() for h in hx)
        return xi, hi, [xi, *hi, *m.parameters()]

    xi, hi, all_r = leaves(ref)
    g_ref = torch.autograd.grad(chunked_oracle(ref, xi, hi, k, weights), all_r)
    xi, hi, all_o = leaves(ours)
    y, _ = ours(xi, hi, window=k)
    g_ours = torch.autograd.grad((y * weights).sum(), all_o)
    assert_close_all(g_ours, g_ref, rtol=1e-9, atol=1e-10)


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
