"""CUDA backend: parity with cuDNN, gradients, windows and resets, packed
sequences, half types, and the persistent kernel against the cuBLAS path.

Every test runs under both recurrent paths where it can: "cublas" forces the
per-step GEMM path (RNNKERNELS_PERSISTENT=0), "auto" lets the glue pick the
persistent kernel whenever it fits (small batch, no projection).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkernels
from rnnkernels import _extension, reference
from rnnkernels.ops import lstm_layer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEV = "cuda"
PATHS = {"cublas": "0", "auto": "auto", "persistent": "1"}


@pytest.fixture(autouse=True)
def _exact_fp32():
    """cuDNN and cuBLAS would otherwise round fp32 GEMMs to TF32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(params=["cublas", "auto"])
def path(request, monkeypatch):
    monkeypatch.setenv("RNNKERNELS_PERSISTENT", PATHS[request.param])
    return request.param


def tol(dtype):
    return {"rtol": 1e-9, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 2e-4, "atol": 2e-5}


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def make_layer(T, B, I, H, P=0, dtype=torch.float64, seed=0):
    """Arguments of one layer direction, small enough to keep gates unsaturated."""
    g = torch.Generator().manual_seed(seed)
    Hp = P or H

    def r(*shape, scale=1.0):
        return ((torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1) * scale).to(DEV, dtype)

    s = Hp**-0.5
    return {
        "x": r(T, B, I),
        "h0": r(B, Hp),
        "c0": r(B, H),
        "w_ih": r(4 * H, I, scale=I**-0.5),
        "w_hh": r(4 * H, Hp, scale=s),
        "b_ih": r(4 * H, scale=0.1),
        "b_hh": r(4 * H, scale=0.1),
        "w_hr": r(Hp, H, scale=H**-0.5) if P else None,
    }


DIFF = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr")


def run_with_grads(fn, args, seed=1, **kw):
    """Outputs of fn and the gradients of a random linear loss of all three."""
    leaves = {k: (v.detach().clone().requires_grad_() if v is not None else None) for k, v in args.items()}
    y, h, c = fn(**leaves, **kw)
    g = torch.Generator().manual_seed(seed)
    loss = sum(
        (t.float() * torch.randn(t.shape, generator=g, dtype=torch.float64).to(DEV, torch.float32)).sum()
        for t in (y, h, c)
    )
    loss.backward()
    grads = {k: v.grad for k, v in leaves.items() if v is not None}
    return (y.detach(), h.detach(), c.detach()), grads


def assert_close_all(got, want, **kw):
    for a, b in zip(got[0], want[0]):
        torch.testing.assert_close(a, b, **kw)
    assert got[1].keys() == want[1].keys()
    for k in want[1]:
        torch.testing.assert_close(got[1][k], want[1][k], **kw, msg=lambda m, k=k: f"grad of {k}: {m}")


def test_extension_has_cuda():
    assert _extension.cuda_extension(), rnnkernels.backend_info()


# --- parity with cuDNN -------------------------------------------------------

CONFIGS = [
    {},
    {"num_layers": 2},
    {"bidirectional": True},
    {"batch_first": True, "num_layers": 2, "bidirectional": True},
    {"proj_size": 6},
    {"proj_size": 6, "bidirectional": True, "num_layers": 2},
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()) or "plain")
def test_matches_cudnn(dtype, cfg, path):
    torch.manual_seed(0)
    ref = nn.LSTM(8, 16, **cfg).to(DEV, dtype)
    mine = rnnkernels.LSTM(8, 16, backend="fused", **cfg).to(DEV, dtype)
    mine.load_state_dict(ref.state_dict())
    shape = (5, 7, 8) if cfg.get("batch_first") else (7, 5, 8)
    x = torch.randn(shape, device=DEV, dtype=dtype)
    results = []
    for model in (ref, mine):
        model.zero_grad()
        xi = x.clone().requires_grad_()
        out, (h, c) = model(xi)
        g = torch.Generator(device=DEV).manual_seed(3)
        loss = sum((t * torch.randn(t.shape, generator=g, device=DEV, dtype=dtype)).sum() for t in (out, h, c))
        loss.backward()
        grads = [xi.grad] + [p.grad for p in model.parameters()]
        results.append(([out.detach(), h.detach(), c.detach()], grads))
    for a, b in zip(results[1][0] + results[1][1], results[0][0] + results[0][1]):
        torch.testing.assert_close(a, b, **tol(dtype))


def test_no_grad_forward_matches(path):
    args = make_layer(6, 3, 5, 8, dtype=torch.float64)
    with torch.no_grad():
        plain = lstm_layer(**args)
    params = {k: (v.clone().requires_grad_() if v is not None else None) for k, v in args.items()}
    saved = lstm_layer(**params)
    for a, b in zip(plain, saved):
        torch.testing.assert_close(a, b.detach(), **tol(torch.float64))


# --- true derivatives: gradcheck in float64 on the GPU -------------------------

GRADCHECK_CASES = {
    "plain": {},
    "reverse": {"reverse": True},
    "lengths": {"lengths": [4, 3, 1]},
    "lengths-reverse": {"lengths": [4, 2, 2], "reverse": True},
    "reset": {"reset": True},
    "reset-reverse-lengths": {"reset": True, "reverse": True, "lengths": [4, 3, 1]},
    "proj": {"P": 3},
    "proj-reverse-lengths": {"P": 3, "reverse": True, "lengths": [4, 3, 1]},
}


def case_kwargs(case, T, B, seed=5):
    kw = {}
    if "lengths" in case:
        kw["lengths"] = torch.tensor(case["lengths"], dtype=torch.long)
    if case.get("reset"):
        g = torch.Generator().manual_seed(seed)
        kw["reset"] = (torch.rand(T, B, generator=g) < 0.3).to(DEV)
    if case.get("reverse"):
        kw["reverse"] = True
    return kw


@pytest.mark.parametrize("name", list(GRADCHECK_CASES))
def test_gradcheck(name, path):
    case = GRADCHECK_CASES[name]
    T, B = 4, 3
    args = make_layer(T, B, 3, 4, P=case.get("P", 0), dtype=torch.float64, seed=2)
    kw = case_kwargs(case, T, B)
    names = [k for k in DIFF if args[k] is not None]
    inputs = tuple(args[k].clone().requires_grad_() for k in names)

    def fn(*tensors):
        return lstm_layer(**dict(zip(names, tensors)), **kw)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_opcheck(path):
    args = make_layer(5, 3, 4, 6, dtype=torch.float64)
    a = {k: (v.requires_grad_() if v is not None else None) for k, v in args.items()}
    torch.library.opcheck(
        torch.ops.rnnkernels.lstm_forward,
        (a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], None, None, None, 0, False, True),
    )


# --- windows and resets against the reference ---------------------------------

WINDOW_CASES = {
    "window2": {"window": 2},
    "window3-reverse": {"window": 3, "reverse": True},
    "window3-lengths": {"window": 3, "lengths": [7, 5, 5, 2]},
    "window2-reverse-lengths": {"window": 2, "reverse": True, "lengths": [7, 6, 3, 0]},
    "reset": {"reset": True},
    "reset-window3-reverse-lengths": {"reset": True, "window": 3, "reverse": True, "lengths": [7, 5, 4, 1]},
    "proj-window2-reset": {"P": 5, "window": 2, "reset": True},
    "proj-window3-reverse-lengths": {"P": 5, "window": 3, "reverse": True, "lengths": [7, 4, 4, 2]},
}


@pytest.mark.parametrize("name", list(WINDOW_CASES))
def test_window_and_reset_match_reference(name, path):
    case = WINDOW_CASES[name]
    T, B = 7, 4
    args = make_layer(T, B, 5, 6, P=case.get("P", 0), dtype=torch.float64, seed=4)
    kw = case_kwargs(case, T, B)
    kw["window"] = case.get("window", 0)
    got = run_with_grads(lstm_layer, args, **kw)
    want = run_with_grads(reference.lstm_layer, args, **kw)
    assert_close_all(got, want, **tol(torch.float64))


def test_module_window_matches_chunked_run(path):
    """window=k on the GPU equals running chunks of k steps with the state
    detached between them."""
    torch.manual_seed(0)
    model = rnnkernels.LSTM(5, 8, num_layers=2, backend="fused").to(DEV, torch.float64)
    x = torch.randn(9, 3, 5, device=DEV, dtype=torch.float64)
    w = torch.randn(9, 3, 8, device=DEV, dtype=torch.float64)

    model.zero_grad()
    (model(x, window=3)[0] * w).sum().backward()
    fused = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    state = None
    for k in range(0, 9, 3):
        out, state = model(x[k : k + 3], state)
        (out * w[k : k + 3]).sum().backward()
        state = tuple(s.detach() for s in state)
    chunked = [p.grad for p in model.parameters()]
    for a, b in zip(fused, chunked):
        torch.testing.assert_close(a, b, **tol(torch.float64))


# --- packed sequences ------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_matches_cudnn(bidirectional, path):
    torch.manual_seed(0)
    dtype = torch.float64
    ref = nn.LSTM(4, 8, num_layers=2, bidirectional=bidirectional).to(DEV, dtype)
    mine = rnnkernels.LSTM(4, 8, num_layers=2, bidirectional=bidirectional, backend="fused").to(DEV, dtype)
    mine.load_state_dict(ref.state_dict())
    lengths = torch.tensor([3, 7, 1, 5, 7])
    x = torch.randn(7, 5, 4, device=DEV, dtype=dtype)
    results = []
    for model in (ref, mine):
        model.zero_grad()
        xi = x.clone().requires_grad_()
        packed = pack_padded_sequence(xi, lengths, enforce_sorted=False)
        out, (h, c) = model(packed)
        out, _ = pad_packed_sequence(out, total_length=7)
        g = torch.Generator(device=DEV).manual_seed(3)
        loss = sum((t * torch.randn(t.shape, generator=g, device=DEV, dtype=dtype)).sum() for t in (out, h, c))
        loss.backward()
        results.append([out.detach(), h.detach(), c.detach(), xi.grad] + [p.grad for p in model.parameters()])
    for a, b in zip(results[1], results[0]):
        torch.testing.assert_close(a, b, **tol(dtype))


# --- half types against an fp32 oracle -----------------------------------------

HALF_CASES = {
    "plain": {},
    "reverse-lengths": {"reverse": True, "lengths": [10, 9, 6, 3]},
    "reset-window": {"reset": True, "window": 4},
    "proj": {"P": 24},
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(HALF_CASES))
def test_half_types_match_fp32(dtype, name, path):
    case = HALF_CASES[name]
    T, B = 10, 4
    args = make_layer(T, B, 16, 32, P=case.get("P", 0), dtype=torch.float32, seed=6)
    # The oracle sees exactly the rounded inputs the half run sees.
    low = {k: (v.to(dtype) if v is not None else None) for k, v in args.items()}
    high = {k: (v.float() if v is not None else None) for k, v in low.items()}
    kw = case_kwargs(case, T, B)
    kw["window"] = case.get("window", 0)
    got = run_with_grads(lstm_layer, low, **kw)
    want = run_with_grads(reference.lstm_layer, high, **kw)
    for a, b in zip(got[0], want[0]):
        assert a.dtype == dtype
        assert rel_err(a, b) < 1e-2
    for k in want[1]:
        assert got[1][k].dtype == dtype
        assert rel_err(got[1][k], want[1][k]) < 1e-2, k


# --- persistent kernel against the cuBLAS path ---------------------------------

PERSISTENT_CASES = {
    "B1": {"B": 1},
    "B5-reverse": {"B": 5, "reverse": True},
    "B16": {"B": 16},
    "B8-lengths": {"B": 8, "lengths": [9, 9, 7, 7, 4, 2, 1, 0]},
    "B6-reverse-lengths-reset-window": {
        "B": 6, "reverse": True, "lengths": [9, 8, 8, 5, 3, 1], "reset": True, "window": 4
    },
    "B3-H301": {"B": 3, "H": 301},  # several units per block, a partial last block, two staging chunks
    "B16-H300-reset-window": {"B": 16, "H": 300, "reset": True, "window": 3},
}


def run_path(monkeypatch, mode, fn, args, **kw):
    monkeypatch.setenv("RNNKERNELS_PERSISTENT", mode)
    return run_with_grads(fn, args, **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(PERSISTENT_CASES))
def test_persistent_matches_cublas(dtype, name, monkeypatch):
    case = PERSISTENT_CASES[name]
    T, B, H = 9, case["B"], case.get("H", 24)
    args = make_layer(T, B, 7, H, dtype=dtype, seed=8)
    kw = case_kwargs(case, T, B)
    kw["window"] = case.get("window", 0)
    forced = run_path(monkeypatch, "1", lstm_layer, args, **kw)
    cublas = run_path(monkeypatch, "0", lstm_layer, args, **kw)
    assert_close_all(forced, cublas, **tol(dtype))
    if dtype == torch.float64:
        want = run_with_grads(reference.lstm_layer, args, **kw)
        assert_close_all(forced, want, **tol(dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_persistent_half_matches_cublas(dtype, monkeypatch):
    args = make_layer(9, 5, 7, 40, dtype=torch.float32, seed=9)
    args = {k: (v.to(dtype) if v is not None else None) for k, v in args.items()}
    forced = run_path(monkeypatch, "1", lstm_layer, args, window=4)
    cublas = run_path(monkeypatch, "0", lstm_layer, args, window=4)
    for a, b in zip(forced[0] + tuple(forced[1].values()), cublas[0] + tuple(cublas[1].values())):
        assert rel_err(a, b) < 1e-2


def test_persistent_forced_where_it_cannot_run(monkeypatch):
    monkeypatch.setenv("RNNKERNELS_PERSISTENT", "1")
    with pytest.raises(RuntimeError, match="RNNKERNELS_PERSISTENT=1"):
        lstm_layer(**make_layer(3, 2, 4, 6, P=3))
    with pytest.raises(RuntimeError, match="RNNKERNELS_PERSISTENT=1"):
        lstm_layer(**make_layer(3, 17, 4, 6))


def test_bad_persistent_setting(monkeypatch):
    monkeypatch.setenv("RNNKERNELS_PERSISTENT", "yes")
    with pytest.raises(RuntimeError, match="RNNKERNELS_PERSISTENT"):
        lstm_layer(**make_layer(3, 2, 4, 6))


def test_large_batch_uses_cublas_and_matches_reference():
    args = make_layer(6, 40, 5, 12, dtype=torch.float64, seed=11)
    kw = {"lengths": torch.arange(40, 0, -1).clamp(max=6), "reverse": True, "window": 4}
    got = run_with_grads(lstm_layer, args, **kw)
    want = run_with_grads(reference.lstm_layer, args, **kw)
    assert_close_all(got, want, **tol(torch.float64))
