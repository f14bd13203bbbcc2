"""CUDA backend: parity with cuDNN, gradcheck and opcheck, windows, resets and
packed sequences against the reference, half types, the persistent kernel
against the per-step path, and the fixes that make the op safe to put in a
real program: no autocast leak, no host synchronisation (so CUDA graphs can
capture it), kernel attributes that concurrent callers do not race on.

Tests run under both recurrent paths where they can: "cublas" forces the
per-step GEMM path (RNNKERNELS_PERSISTENT=0), "auto" lets the glue pick the
persistent kernel whenever it fits (small batch, no projection).
"""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkernels
from rnnkernels import _extension, reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEV = "cuda"
OP = torch.ops.rnnkernels.lstm


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
    monkeypatch.setenv("RNNKERNELS_PERSISTENT", {"cublas": "0", "auto": "auto"}[request.param])
    return request.param


def tol(dtype):
    return {"rtol": 1e-9, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 2e-4, "atol": 2e-5}


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def stack_args(T=7, B=4, I=5, H=6, layers=1, bidirectional=False, proj=0, lengths=None, reset_p=0.0, window=0,
               dtype=torch.float64, seed=0):  # fmt: skip
    """Arguments of torch.ops.rnnkernels.lstm on the GPU, small enough to keep
    the gates unsaturated. lengths (decreasing) makes the input packed."""
    g = torch.Generator().manual_seed(seed)
    D, P = 2 if bidirectional else 1, proj or H

    def r(*shape, scale=1.0):
        return ((torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1) * scale).to(DEV, dtype)

    params = []
    for layer in range(layers):
        for _ in range(D):
            n_in = I if layer == 0 else D * P
            params += [r(4 * H, n_in, scale=n_in**-0.5), r(4 * H, P, scale=P**-0.5), r(4 * H, scale=0.1),
                       r(4 * H, scale=0.1)] + ([r(P, H, scale=H**-0.5)] if proj else [])  # fmt: skip
    x, batch_sizes = r(T, B, I), None
    if lengths is not None:
        packed = pack_padded_sequence(x, torch.tensor(lengths))
        x, batch_sizes = packed.data, packed.batch_sizes
    reset = None
    if reset_p:
        reset = (torch.rand(max(lengths) if lengths else T, B, generator=g) < reset_p).to(DEV)
    return dict(input=x, hx=r(layers * D, B, P), cx=r(layers * D, B, H), params=params, batch_sizes=batch_sizes,
                reset=reset, has_biases=True, num_layers=layers, bidirectional=bidirectional, dropout=0.0,
                train=False, window=window)  # fmt: skip


def leaves_of(a):
    return [a["input"], a["hx"], a["cx"], *a["params"]]


def with_leaves(a, ts):
    return dict(a, input=ts[0], hx=ts[1], cx=ts[2], params=list(ts[3:]))


def run_with_grads(fn, a, seed=1):
    """Outputs of fn and the gradients of a random linear loss of all three
    with respect to every leaf."""
    leaves = [t.detach().clone().requires_grad_() for t in leaves_of(a)]
    outs = fn(**with_leaves(a, leaves))
    g = torch.Generator().manual_seed(seed)
    loss = sum((t.double() * torch.randn(t.shape, generator=g, dtype=torch.float64).to(DEV)).sum() for t in outs)
    grads = torch.autograd.grad(loss, leaves)
    return [t.detach() for t in outs] + list(grads)


def assert_all_close(got, want, **kw):
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, **kw, msg=lambda m, i=i: f"item {i}: {m}")


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


def module_run(model, x, packed_lengths=None):
    model.zero_grad()
    xi = x.clone().requires_grad_()
    inp = pack_padded_sequence(xi, packed_lengths, enforce_sorted=False) if packed_lengths is not None else xi
    out, (h, c) = model(inp)
    if packed_lengths is not None:
        out, _ = pad_packed_sequence(out, total_length=x.shape[0])
    g = torch.Generator(device=DEV).manual_seed(3)
    loss = sum((t * torch.randn(t.shape, generator=g, device=DEV, dtype=t.dtype)).sum() for t in (out, h, c))
    loss.backward()
    return [out.detach(), h.detach(), c.detach(), xi.grad] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()) or "plain")
def test_matches_cudnn(dtype, cfg, path):
    torch.manual_seed(0)
    ref = nn.LSTM(8, 16, **cfg).to(DEV, dtype)
    mine = rnnkernels.LSTM(8, 16, backend="fused", **cfg).to(DEV, dtype)
    mine.load_state_dict(ref.state_dict())
    x = torch.randn((5, 7, 8) if cfg.get("batch_first") else (7, 5, 8), device=DEV, dtype=dtype)
    assert_all_close(module_run(mine, x), module_run(ref, x), **tol(dtype))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_matches_cudnn(bidirectional, path):
    torch.manual_seed(0)
    ref = nn.LSTM(4, 8, num_layers=2, bidirectional=bidirectional).to(DEV, torch.float64)
    mine = rnnkernels.LSTM(4, 8, num_layers=2, bidirectional=bidirectional, backend="fused").to(DEV, torch.float64)
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(7, 5, 4, device=DEV, dtype=torch.float64)
    lengths = torch.tensor([3, 7, 1, 5, 7])
    assert_all_close(module_run(mine, x, lengths), module_run(ref, x, lengths), **tol(torch.float64))


def test_no_grad_forward_matches(path):
    a = stack_args(layers=2, bidirectional=True)
    with torch.no_grad():
        plain = OP(**a)
    trained = OP(**with_leaves(a, [t.clone().requires_grad_() for t in leaves_of(a)]))
    assert_all_close(list(plain), [t.detach() for t in trained], rtol=0, atol=0)


# --- true derivatives: gradcheck and opcheck in float64 on the GPU ------------

CASES = {
    "plain": {},
    "stack-bidirectional": {"layers": 2, "bidirectional": True},
    "packed": {"lengths": [4, 3, 1]},
    "packed-bidirectional": {"lengths": [4, 2, 2], "bidirectional": True},
    "reset": {"reset_p": 0.3},
    "reset-packed-bidirectional": {"reset_p": 0.3, "bidirectional": True, "lengths": [4, 3, 1]},
    "proj": {"proj": 3},
    "proj-packed-bidirectional": {"proj": 3, "bidirectional": True, "lengths": [4, 3, 1]},
}


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name, path):
    a = stack_args(T=4, B=3, I=3, H=4, seed=2, **CASES[name])
    leaves = [t.clone().requires_grad_() for t in leaves_of(a)]
    assert torch.autograd.gradcheck(lambda *ts: OP(**with_leaves(a, ts)), leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("name", ["stack-bidirectional", "reset-packed-bidirectional"])
def test_opcheck(name, path):
    a = stack_args(T=4, B=3, I=3, H=4, window=2, **CASES[name])
    a = with_leaves(a, [t.requires_grad_() for t in leaves_of(a)])
    torch.library.opcheck(OP.default, tuple(a.values()))


def test_second_order_matches_the_cpu():
    a = stack_args(T=4, B=2, I=3, H=3, layers=2, bidirectional=True, reset_p=0.3)
    results = []
    for device in (DEV, "cpu"):
        b = {k: (v.to(device) if isinstance(v, torch.Tensor) and k != "batch_sizes" else v) for k, v in a.items()}
        b["params"] = [p.to(device).requires_grad_() for p in a["params"]]
        x = b["input"].requires_grad_()
        out, hy, cy = OP(**b)
        (gx,) = torch.autograd.grad(out.square().sum() + hy.sum(), x, create_graph=True)
        results.append([g.cpu() for g in torch.autograd.grad(gx.square().sum(), b["params"])])
    assert_all_close(results[0], results[1], **tol(torch.float64))


# --- windows, resets and packed input against the reference ---------------------

FEATURE_CASES = {
    "window2": {"window": 2},
    "window3-bidirectional": {"window": 3, "bidirectional": True},
    "window3-packed": {"window": 3, "lengths": [7, 5, 5, 2]},
    "window2-packed-bidirectional": {"window": 2, "bidirectional": True, "lengths": [7, 6, 3, 1]},
    "reset": {"reset_p": 0.3},
    "reset-window3-packed-bidirectional": {"reset_p": 0.3, "window": 3, "bidirectional": True, "lengths": [7, 5, 4, 1]},
    "proj-window2-reset-stack": {"proj": 5, "window": 2, "reset_p": 0.3, "layers": 2},
    "proj-window3-packed-bidirectional": {"proj": 5, "window": 3, "bidirectional": True, "lengths": [7, 4, 4, 2]},
}


@pytest.mark.parametrize("name", list(FEATURE_CASES))
def test_features_match_reference(name, path):
    a = stack_args(seed=4, **FEATURE_CASES[name])
    assert_all_close(run_with_grads(OP, a), run_with_grads(reference.lstm, a), **tol(torch.float64))


def test_module_window_matches_chunked_run(path):
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
    assert_all_close(fused, [p.grad for p in model.parameters()], **tol(torch.float64))


def test_large_batch_uses_the_per_step_path_and_matches_reference():
    a = stack_args(T=6, B=40, I=5, H=12, bidirectional=True, lengths=torch.arange(40, 0, -1).clamp(max=6).tolist(),
                   window=4, reset_p=0.2, seed=11)  # fmt: skip
    assert_all_close(run_with_grads(OP, a), run_with_grads(reference.lstm, a), **tol(torch.float64))


# --- half types -----------------------------------------------------------------

HALF_CASES = {
    "plain": {},
    "packed-bidirectional": {"bidirectional": True, "lengths": [10, 9, 6, 3]},
    "reset-window": {"reset_p": 0.2, "window": 4},
    "proj-stack": {"proj": 24, "layers": 2},
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(HALF_CASES))
def test_half_types_match_fp32(dtype, name, path):
    a = stack_args(T=10, B=4, I=16, H=32, dtype=torch.float32, seed=6, **HALF_CASES[name])
    # The oracle sees exactly the rounded inputs the half run sees.
    low = {k: (v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in a.items()}
    low["params"] = [p.to(dtype) for p in a["params"]]
    high = {k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in low.items()}
    high["params"] = [p.float() for p in low["params"]]
    got, want = run_with_grads(OP, low), run_with_grads(reference.lstm, high)
    for i, (u, v) in enumerate(zip(got, want)):
        assert u.dtype == dtype
        assert rel_err(u, v) < 1e-2, i


def test_bf16_long_sequence_keeps_the_cell_state_in_float32(path):
    """T = 2000: a cell state rounded to bf16 every step drifts far from the
    float64 result; one kept in float32 stays within bf16's own rounding."""
    a = stack_args(T=2000, B=3, I=16, H=64, dtype=torch.float64, seed=12)
    low = dict(a, input=a["input"].bfloat16(), hx=a["hx"].bfloat16(), cx=a["cx"].bfloat16(),
               params=[p.bfloat16() for p in a["params"]])  # fmt: skip
    high = dict(low, input=low["input"].double(), hx=low["hx"].double(), cx=low["cx"].double(),
                params=[p.double() for p in low["params"]])  # fmt: skip
    with torch.no_grad():
        got, want = OP(**low), reference.lstm(**high)
    assert rel_err(got[2], want[2]) < 2e-2  # the final cell state
    assert rel_err(got[0], want[0]) < 2e-2


# --- persistent kernel against the per-step path -----------------------------------

PERSISTENT_CASES = {
    "B1": {"B": 1},
    "B5-bidirectional": {"B": 5, "bidirectional": True},
    "B16": {"B": 16},
    "B8-packed": {"B": 8, "lengths": [9, 9, 7, 7, 4, 2, 1, 1]},
    "B6-packed-bidirectional-reset-window": {
        "B": 6,
        "bidirectional": True,
        "lengths": [9, 8, 8, 5, 3, 1],
        "reset_p": 0.3,
        "window": 4,
    },  # fmt: skip
    "B3-H301": {"B": 3, "H": 301},  # several units per block, a partial last block, two staging chunks
    "B16-H300-reset-window-stack": {"B": 16, "H": 300, "reset_p": 0.3, "window": 3, "layers": 2},
}


def run_path(monkeypatch, mode, a):
    monkeypatch.setenv("RNNKERNELS_PERSISTENT", mode)
    return run_with_grads(OP, a)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(PERSISTENT_CASES))
def test_persistent_matches_per_step(dtype, name, monkeypatch):
    case = dict(PERSISTENT_CASES[name])
    a = stack_args(T=9, I=7, dtype=dtype, seed=8, B=case.pop("B"), H=case.pop("H", 24), **case)
    forced = run_path(monkeypatch, "1", a)
    per_step = run_path(monkeypatch, "0", a)
    assert_all_close(forced, per_step, **tol(dtype))
    if dtype == torch.float64:
        assert_all_close(forced, run_with_grads(reference.lstm, a), **tol(dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_persistent_half_agrees_with_per_step(dtype, monkeypatch):
    """Both paths keep c, the carried dc and the recurrent product in float32,
    so they differ only by the order of float32 sums."""
    a = stack_args(T=9, B=5, I=7, H=40, dtype=torch.float32, seed=9, window=4, lengths=[9, 8, 8, 3, 1])
    a = dict(a, input=a["input"].to(dtype), hx=a["hx"].to(dtype), cx=a["cx"].to(dtype),
             params=[p.to(dtype) for p in a["params"]])  # fmt: skip
    forced, per_step = run_path(monkeypatch, "1", a), run_path(monkeypatch, "0", a)
    for u, v in zip(forced, per_step):
        assert rel_err(u, v) < 2e-3


def test_persistent_forced_where_it_cannot_run(monkeypatch):
    monkeypatch.setenv("RNNKERNELS_PERSISTENT", "1")
    with pytest.raises(RuntimeError, match="RNNKERNELS_PERSISTENT=1"):
        OP(**stack_args(T=3, B=2, proj=3))
    with pytest.raises(RuntimeError, match="RNNKERNELS_PERSISTENT=1"):
        OP(**stack_args(T=3, B=17))


def test_bad_persistent_setting(monkeypatch):
    monkeypatch.setenv("RNNKERNELS_PERSISTENT", "yes")
    with pytest.raises(RuntimeError, match="RNNKERNELS_PERSISTENT"):
        OP(**stack_args(T=3, B=2))


# --- safe in a real program -------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_direct_call_ignores_autocast(dtype, path):
    """The op runs in its inputs' dtype: under autocast its own GEMMs must not
    come back in float16 (which the kernels would misread)."""
    a = stack_args(layers=2, bidirectional=True, dtype=dtype)
    want = run_with_grads(OP, a)
    with torch.autocast("cuda", dtype=torch.float16):
        got = run_with_grads(OP, a)
    assert all(g.dtype == w.dtype for g, w in zip(got, want))
    assert_all_close(got, want, **tol(dtype))


def test_module_under_autocast_runs_in_the_autocast_dtype():
    torch.manual_seed(0)
    ref = nn.LSTM(8, 16, num_layers=2).to(DEV)
    mine = rnnkernels.LSTM(8, 16, num_layers=2).to(DEV)
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(6, 3, 8, device=DEV)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        want, got = ref(x), mine(x)
    assert got[0].dtype == want[0].dtype == torch.bfloat16
    assert rel_err(got[0], want[0]) < 2e-2


@pytest.mark.parametrize("packed", [False, True])
def test_no_host_synchronisation(packed, path):
    """No forward or backward waits for the GPU or copies to it from the
    host (the lengths of packed input stay on the host)."""
    torch.manual_seed(0)
    model = rnnkernels.LSTM(5, 8, num_layers=2, bidirectional=True).to(DEV)
    x = torch.randn(6, 3, 5, device=DEV, requires_grad=True)
    reset = torch.rand(6, 3, device=DEV) < 0.2
    inp = pack_padded_sequence(x, torch.tensor([6, 4, 2]), enforce_sorted=False) if packed else x
    model(inp, reset=reset)  # warm-up: first-call allocations and attribute queries
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, (h, c) = model(inp, reset=reset, window=2)
        data = out.data if packed else out
        (data.square().sum() + h.sum() + c.sum()).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def test_captured_in_a_cuda_graph(path):
    """With no host synchronisation the inference forward can be captured
    once and replayed."""
    torch.manual_seed(0)
    model = rnnkernels.LSTM(5, 8, num_layers=2).to(DEV).eval()
    x = torch.randn(6, 3, 5, device=DEV)
    with torch.no_grad():
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            model(x)  # warm-up on a side stream, as graph capture requires
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out, _ = model(x)
        x.copy_(torch.randn(6, 3, 5, device=DEV))
        graph.replay()
        want, _ = model(x)
    torch.testing.assert_close(out, want)


def test_concurrent_callers_with_different_sizes(monkeypatch):
    """Kernel attributes are set once per device, not per launch: host
    threads running different problem sizes at once get their own results."""
    monkeypatch.setenv("RNNKERNELS_PERSISTENT", "auto")
    problems = [stack_args(T=8, B=b, H=h, dtype=torch.float32, seed=b) for b, h in ((2, 40), (9, 300), (4, 900))]
    with torch.no_grad():
        want = [OP(**a)[0] for a in problems]
    torch.cuda.synchronize()
    got, errors = [None] * len(problems), []

    def work(i):
        try:
            stream = torch.cuda.Stream()
            with torch.cuda.stream(stream), torch.no_grad():
                for _ in range(20):
                    got[i] = OP(**problems[i])[0]
            stream.synchronize()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(problems))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
