"""Module behaviour beyond the numbers: state_dict, repr, backends,
replace_lstm, torch.compile, autocast, backend_info."""

import warnings

import pytest
import torch
from torch import nn

import rnnkernels
from conftest import assert_close_all, grads, lstm_pair, requires_extension
from rnnkernels import _extension


def test_parameters_match_nn_lstm_names_shapes_and_init():
    for kw in [dict(), dict(num_layers=2, bidirectional=True, proj_size=3, bias=False)]:
        torch.manual_seed(0)
        ref = nn.LSTM(5, 7, **kw)
        torch.manual_seed(0)
        ours = rnnkernels.LSTM(5, 7, **kw)
        assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
        for (_, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters()):
            assert torch.equal(a, b)  # the same initialisation from the same seed
        assert repr(ours) == repr(ref)


def test_state_dict_loads_both_ways():
    ref, ours = lstm_pair(5, 7, num_layers=2, bidirectional=True, proj_size=3)
    back = nn.LSTM(5, 7, num_layers=2, bidirectional=True, proj_size=3, dtype=torch.float64)
    back.load_state_dict(ours.state_dict())
    x = torch.randn(4, 2, 5, dtype=torch.float64)
    assert_close_all(back(x)[0:1], ours(x)[0:1])


def test_repr_shows_non_default_options():
    assert repr(rnnkernels.LSTM(3, 4, backend="reference", window=5)) == "LSTM(3, 4, backend='reference', window=5)"


@requires_extension
def test_reference_backend_matches_fused():
    _, fused = lstm_pair(4, 6, num_layers=2, bidirectional=True, proj_size=2)
    _, slow = lstm_pair(4, 6, num_layers=2, bidirectional=True, proj_size=2, backend="reference")
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    reset = torch.rand(6, 3) < 0.3
    outs = []
    for m in (fused, slow):
        xi = x.clone().requires_grad_()
        y, (h, c) = m(xi, window=4, reset=reset)
        outs.append(((y, h, c), grads((y, h, c), [xi, *m.parameters()])))
    assert_close_all(outs[0][0], outs[1][0], rtol=1e-9, atol=1e-10)
    assert_close_all(outs[0][1], outs[1][1], rtol=1e-9, atol=1e-10)


def test_auto_falls_back_to_reference_with_one_warning(monkeypatch):
    monkeypatch.setattr(_extension, "_C", None)
    monkeypatch.setattr(_extension, "LOAD_ERROR", "ImportError: simulated")
    monkeypatch.setattr(_extension, "_warned", False)
    info = rnnkernels.backend_info()
    assert info["cpu_extension"] is False and "simulated" in info["reason"]
    m = rnnkernels.LSTM(3, 4)
    with pytest.warns(RuntimeWarning, match="falling back to the pure-PyTorch reference"):
        m(torch.randn(2, 1, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m(torch.randn(2, 1, 3))  # only once
    with pytest.raises(RuntimeError, match="backend='fused' needs the compiled extension"):
        rnnkernels.LSTM(3, 4, backend="fused")


def test_backend_info_reports_the_build():
    info = rnnkernels.backend_info()
    assert isinstance(info["cpu_extension"], bool) and isinstance(info["cuda_extension"], bool)
    assert info["torch"] == torch.__version__
    if not info["cuda_extension"]:
        assert info["reason"]


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.lstm = nn.LSTM(6, 8, num_layers=2, dropout=0.1)
        self.head = nn.Sequential(nn.Linear(8, 11))

    def forward(self, tokens):
        y, _ = self.lstm(self.emb(tokens))
        return self.head(y)


@requires_extension
def test_replace_lstm_keeps_weights_dtype_and_mode():
    torch.manual_seed(0)
    model = TinyLM().double().eval()
    tokens = torch.randint(0, 11, (7, 3))
    expected = model(tokens)
    assert rnnkernels.replace_lstm(model) is model
    assert type(model.lstm) is rnnkernels.LSTM and not model.lstm.training
    assert model.lstm.weight_ih_l0.dtype == torch.float64 and model.lstm.dropout == 0.1
    torch.testing.assert_close(model(tokens), expected)


@requires_extension
def test_torch_compile_fullgraph_forward_and_backward():
    torch.manual_seed(0)
    model = rnnkernels.replace_lstm(TinyLM().eval())
    compiled = torch.compile(model, fullgraph=True)
    tokens = torch.randint(0, 11, (7, 3))
    out_eager = model(tokens)
    g_eager = torch.autograd.grad(out_eager.square().sum(), list(model.parameters()))
    out_compiled = compiled(tokens)
    g_compiled = torch.autograd.grad(out_compiled.square().sum(), list(model.parameters()))
    torch.testing.assert_close(out_compiled, out_eager)
    assert_close_all(g_compiled, g_eager)


def test_fused_kernels_are_chosen_per_device(monkeypatch):
    assert _extension.missing_kernels(torch.device("xpu")) is not None
    monkeypatch.setattr(_extension, "cuda_extension", lambda: False)
    if _extension.cpu_extension():
        assert _extension.missing_kernels(torch.device("cpu")) is None
    assert "without CUDA kernels" in _extension.missing_kernels(torch.device("cuda"))
