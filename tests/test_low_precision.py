"""float16 and bfloat16 on the CPU, and autocast: what nn.LSTM returns
(dtypes of outputs and gradients), with values within the rounding of the
dtype. The oracle for values is the float64 reference run on exactly the
rounded inputs and weights; nn.LSTM in the same dtype is held to the same
bound, so the test measures rounding, not the peer's error."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkernels
from conftest import requires_extension
from rnnkernels._extension import _C

pytestmark = requires_extension

LOW = [torch.bfloat16, torch.float16]


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def low_pair(dtype, input_size=6, hidden_size=8, **kwargs):
    torch.manual_seed(0)
    ref = nn.LSTM(input_size, hidden_size, dtype=dtype, **kwargs)
    ours = rnnkernels.LSTM(input_size, hidden_size, dtype=dtype, **kwargs)
    ours.load_state_dict(ref.state_dict())
    oracle = rnnkernels.LSTM(input_size, hidden_size, dtype=torch.float64, backend="reference", **kwargs)
    oracle.load_state_dict({k: v.double() for k, v in ref.state_dict().items()})
    return ref, ours, oracle


def grads(outputs, inputs, seed=1):
    """Gradients of a random projection of `outputs`, the projection drawn in
    float64 so that every dtype sees the same one."""
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype)).sum() for o in outputs)
    return torch.autograd.grad(loss, inputs)


def outputs_and_grads(m, x, **kwargs):
    x = x.detach().clone().requires_grad_()
    y, (h, c) = m(x, **kwargs)
    return [y, h, c, *grads((y, h, c), [x, *m.parameters()])]


# The CPU's own choice; and the bfloat16 tiles (with rounded operands) even
# where they do not pay, so that every CPU with avx512_bf16 tests them.
GEMMS = ["", "bf16"]


@pytest.mark.parametrize("gemm", GEMMS)
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize(
    "cfg",
    [
        dict(),
        dict(num_layers=2, bidirectional=True),
        dict(proj_size=3, num_layers=2),
        # Odd depths everywhere: bfloat16 products pair depths and pad the last.
        dict(input_size=5, hidden_size=7, proj_size=3, num_layers=2, bidirectional=True),
        # Two threads, and the input projected in passes of 4 steps.
        dict(input_size=40, hidden_size=48, bidirectional=True, batch=40),
    ],
)
def test_low_precision_like_nn_lstm(dtype, cfg, gemm, monkeypatch):
    if gemm:
        monkeypatch.setenv("RNNKERNELS_CPU_GEMM", gemm)
    cfg = dict(cfg)
    batch = cfg.pop("batch", 3)
    ref, ours, oracle = low_pair(dtype, **cfg)
    x = torch.randn(7, batch, cfg.get("input_size", 6), generator=torch.Generator().manual_seed(1)).to(dtype)
    got, peer = outputs_and_grads(ours, x), outputs_and_grads(ref, x)
    want = outputs_and_grads(oracle, x.double())
    bound = 2e-2 if dtype == torch.bfloat16 else 4e-3
    for i, (g, p, w) in enumerate(zip(got, peer, want)):
        assert g.dtype == p.dtype == dtype, i
        assert rel_err(g, w) < bound, (i, rel_err(g, w), rel_err(p, w))


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("gemm", [*GEMMS, "avx2"])
def test_low_precision_features_match_the_reference(dtype, gemm, monkeypatch):
    """Packed input, resets and windows, which nn.LSTM lacks, against the
    reference in float64 on the same rounded values; with the bfloat16
    products (input, weights, output and dG kept in bfloat16) and without
    them (RNNKERNELS_CPU_GEMM=avx2: all widened to float32)."""
    if gemm:
        monkeypatch.setenv("RNNKERNELS_CPU_GEMM", gemm)
    if gemm == "avx2":
        assert not _C.panel_gemm_enabled(torch.bfloat16)
    torch.manual_seed(0)
    ours = rnnkernels.LSTM(6, 8, num_layers=2, bidirectional=True, dtype=dtype)
    oracle = rnnkernels.LSTM(6, 8, num_layers=2, bidirectional=True, dtype=torch.float64, backend="reference")
    oracle.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    g = torch.Generator().manual_seed(2)
    x = torch.randn(7, 3, 6, generator=g).to(dtype)
    reset = torch.rand(7, 3, generator=g) < 0.2
    lengths = torch.tensor([7, 4, 6])
    results = []
    for m, xx in ((ours, x), (oracle, x.double())):
        xi = xx.clone().requires_grad_()
        y, (h, c) = m(pack_padded_sequence(xi, lengths, enforce_sorted=False), reset=reset, window=3)
        results.append([y.data, h, c, *grads((y.data, h, c), [xi, *m.parameters()])])
    for i, (u, v) in enumerate(zip(*results)):
        assert rel_err(u, v) < 2e-2, i


def test_cpu_autocast_returns_what_nn_lstm_returns():
    torch.manual_seed(0)
    ref = nn.LSTM(6, 8, num_layers=2)
    ours = rnnkernels.LSTM(6, 8, num_layers=2)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(5, 3, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = ref(x), ours(x)
    for w, g in zip((want[0], *want[1]), (got[0], *got[1])):
        assert g.dtype == w.dtype == torch.bfloat16
        assert rel_err(g, w) < 2e-2


def test_direct_op_call_ignores_cpu_autocast():
    """The op runs in its inputs' dtype: autocast must not recast its own
    GEMMs (the kernels would misread them) or its results."""
    torch.manual_seed(0)
    m = rnnkernels.LSTM(6, 8, num_layers=2, bidirectional=True)
    args = (torch.randn(5, 3, 6), None, None, list(m._flat_weights), None, None, True, 2, True, 0.0, False, 0)
    want = torch.ops.rnnkernels.lstm(*args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = torch.ops.rnnkernels.lstm(*args)
    for g, w in zip(got, want):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, w, rtol=0, atol=0)
