"""rnnkernels.LSTM against torch.nn.LSTM with copied weights: outputs, states
and every gradient (input, h0, c0, all parameters)."""

import itertools

import pytest
import torch

from conftest import assert_close_all, grads, lstm_pair, requires_extension

pytestmark = requires_extension

F64 = dict(rtol=1e-9, atol=1e-10)
F32 = dict(rtol=2e-5, atol=2e-5)


def run_both(ref, ours, x, hx=None):
    """Forward both modules on identical leaves; returns (outputs, grads) of each."""
    results = []
    for m in (ref, ours):
        xi = x.detach().clone().requires_grad_()
        hxi = None if hx is None else tuple(h.detach().clone().requires_grad_() for h in hx)
        y, (h, c) = m(xi, hxi)
        leaves = [xi, *(hxi or ()), *m.parameters()]
        results.append(((y, h, c), grads((y, h, c), leaves)))
    return results


def check(ref, ours, x, hx=None, tol=F64):
    (out_r, g_r), (out_o, g_o) = run_both(ref, ours, x, hx)
    assert_close_all(out_o, out_r, **tol)
    assert_close_all(g_o, g_r, **tol)


@pytest.mark.parametrize(
    "layers,bidirectional,proj,batch_first,bias,with_hx",
    list(itertools.product([1, 3], [False, True], [0, 3], [False, True], [True, False], [False, True])),
)
def test_feature_grid_float64(layers, bidirectional, proj, batch_first, bias, with_hx):
    ref, ours = lstm_pair(
        5, 7, num_layers=layers, bidirectional=bidirectional, proj_size=proj, batch_first=batch_first, bias=bias
    )
    T, B = 4, 3
    x = torch.randn((B, T, 5) if batch_first else (T, B, 5), dtype=torch.float64)
    hx = None
    if with_hx:
        n = layers * (2 if bidirectional else 1)
        hx = (torch.randn(n, B, proj or 7, dtype=torch.float64), torch.randn(n, B, 7, dtype=torch.float64))
    check(ref, ours, x, hx)


@pytest.mark.parametrize(
    "T,B,I,H", [(1, 1, 1, 1), (1, 4, 3, 5), (7, 1, 3, 5), (13, 5, 11, 17), (3, 33, 2, 9), (35, 4, 20, 20)]
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sizes(T, B, I, H, dtype):
    ref, ours = lstm_pair(I, H, num_layers=2, dtype=dtype)
    x = torch.randn(T, B, I, dtype=dtype)
    hx = (torch.randn(2, B, H, dtype=dtype), torch.randn(2, B, H, dtype=dtype))
    check(ref, ours, x, hx, tol=F64 if dtype == torch.float64 else F32)


def test_large_values_saturate_like_nn_lstm():
    ref, ours = lstm_pair(4, 6)
    check(ref, ours, 50 * torch.randn(6, 3, 4, dtype=torch.float64))


def test_unbatched_input():
    ref, ours = lstm_pair(4, 6, num_layers=2, bidirectional=True, proj_size=2)
    x = torch.randn(5, 4, dtype=torch.float64)
    hx = (torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64))
    y_r, (h_r, c_r) = ref(x, hx)
    y_o, (h_o, c_o) = ours(x, hx)
    assert y_o.shape == (5, 4) and h_o.shape == (4, 2)
    assert_close_all((y_o, h_o, c_o), (y_r, h_r, c_r), **F64)


@pytest.mark.parametrize(
    "make",
    [
        lambda x: x.transpose(0, 1).contiguous().transpose(0, 1),  # batch-major storage
        lambda x: torch.stack([x, -x], dim=3)[..., 0],  # strided features
        lambda x: torch.cat([x, x], dim=1)[:, : x.shape[1]],  # slice of a larger batch
    ],
)
def test_non_contiguous_inputs(make):
    ref, ours = lstm_pair(4, 6, num_layers=2)
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    xs = make(x)
    assert torch.equal(xs, x)
    h = torch.randn(3, 2, 6, dtype=torch.float64).transpose(0, 1)  # (2, 3, 6), non-contiguous
    hx = (h, h.clone() * 0.5)
    check(ref, ours, xs, hx)
    y_contig, _ = ours(x.contiguous(), tuple(t.contiguous() for t in hx))
    y_strided, _ = ours(xs, hx)
    assert torch.equal(y_contig, y_strided)


def test_empty_batch_like_nn_lstm():
    ref, ours = lstm_pair(4, 6, num_layers=2)
    x = torch.randn(5, 0, 4, dtype=torch.float64, requires_grad=True)
    y_r, (h_r, _) = ref(x)
    y_o, (h_o, _) = ours(x)
    assert y_o.shape == y_r.shape and h_o.shape == h_r.shape
    (y_o.sum() + h_o.sum()).backward()
    assert x.grad.shape == x.shape


def test_dropout_eval_mode_matches_and_training_mode_drops():
    ref, ours = lstm_pair(4, 6, num_layers=3, dropout=0.5)
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    ref.eval(), ours.eval()
    check(ref, ours, x)
    ours.train()
    torch.manual_seed(0)
    y1, _ = ours(x)
    torch.manual_seed(1)
    y2, _ = ours(x)
    y_eval, _ = ours.eval()(x)
    assert not torch.allclose(y1, y2) and not torch.allclose(y1, y_eval)


@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("bidirectional,proj", [(False, 0), (True, 0), (True, 2)])
@pytest.mark.parametrize("with_hx", [False, True])
def test_packed_sequences(enforce_sorted, bidirectional, proj, with_hx):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    ref, ours = lstm_pair(4, 5, num_layers=2, bidirectional=bidirectional, proj_size=proj)
    lengths = torch.tensor([6, 4, 4, 1]) if enforce_sorted else torch.tensor([3, 6, 1, 4])
    x = torch.randn(6, 4, 4, dtype=torch.float64)
    n = 2 * (2 if bidirectional else 1)
    hx = (torch.randn(n, 4, proj or 5, dtype=torch.float64), torch.randn(n, 4, 5, dtype=torch.float64))
    results = []
    for m in (ref, ours):
        xi = x.clone().requires_grad_()
        hi = tuple(h.clone().requires_grad_() for h in hx) if with_hx else None
        packed = pack_padded_sequence(xi, lengths, enforce_sorted=enforce_sorted)
        y, (h, c) = m(packed, hi)
        assert isinstance(y, torch.nn.utils.rnn.PackedSequence)
        padded, out_lengths = pad_packed_sequence(y)
        assert torch.equal(out_lengths, lengths)
        outs = (padded, h, c)
        results.append((outs, grads(outs, [xi, *(hi or ()), *m.parameters()])))
    assert_close_all(results[1][0], results[0][0], **F64)
    assert_close_all(results[1][1], results[0][1], **F64)
