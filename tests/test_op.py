"""The fused stack op itself (torch.ops.rnnkernels.lstm): opcheck, gradcheck,
agreement with the reference over every flag, one call per forward and one
per backward whatever the stack, and fake kernels that raise what the C++
kernels raise."""

import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import assert_close_all, grads, requires_extension
from rnnkernels import reference

pytestmark = requires_extension

OP = torch.ops.rnnkernels.lstm


def op_args(T=5, B=3, I=4, H=5, layers=2, bidirectional=True, proj=0, bias=True, lengths=None, reset_p=0.0,
            window=0, dropout=0.0, train=False, with_hx=True, dtype=torch.float64, seed=0):  # fmt: skip
    """The op's arguments, in schema order, with leaves that require grad.
    lengths (sorted decreasing) makes the input packed."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: (torch.randn(*s, generator=g, dtype=torch.float64) * 0.5).to(dtype).requires_grad_()  # noqa: E731
    D, P = 2 if bidirectional else 1, proj or H
    params = []
    for layer in range(layers):
        for _ in range(D):
            params += [r(4 * H, I if layer == 0 else D * P), r(4 * H, P)]
            params += [r(4 * H), r(4 * H)] if bias else []
            params += [r(P, H)] if proj else []
    x = r(T, B, I)
    batch_sizes = None
    if lengths is not None:
        packed = pack_padded_sequence(x.detach(), torch.tensor(lengths))
        x, batch_sizes = packed.data.requires_grad_(), packed.batch_sizes
    hx, cx = (r(layers * D, B, P), r(layers * D, B, H)) if with_hx else (None, None)
    reset = torch.rand(max(lengths) if lengths else T, B, generator=g) < reset_p if reset_p else None
    flags = dict(has_biases=bias, num_layers=layers, bidirectional=bidirectional, dropout=dropout, train=train)
    return dict(input=x, hx=hx, cx=cx, params=params, batch_sizes=batch_sizes, reset=reset, **flags, window=window)


def leaves(a):
    return [t for t in (a["input"], a["hx"], a["cx"], *a["params"]) if t is not None]


def with_leaves(a, ts):
    """a with its leaves replaced by ts, in leaves() order."""
    a, ts = dict(a), list(ts)
    for k in ("input", "hx", "cx"):
        if a[k] is not None:
            a[k] = ts.pop(0)
    a["params"] = ts
    return a


CASES = {
    "one layer": dict(layers=1, bidirectional=False),
    "stack": dict(),
    "no bias, no hx": dict(bias=False, with_hx=False),
    "proj": dict(proj=2),
    "packed": dict(lengths=[4, 3, 1]),
    "packed proj reset": dict(proj=3, lengths=[4, 4, 2], reset_p=0.3, layers=3),
    "reset": dict(reset_p=0.3, bidirectional=False),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("window", [0, 2])
def test_opcheck(case, window):
    a = op_args(T=4, B=3, I=3, H=4, window=window, **CASES[case])
    torch.library.opcheck(OP.default, tuple(a.values()))


def test_opcheck_with_dropout_between_layers():
    # p = 1 drops everything, so the masks are the same in every run opcheck compares.
    a = op_args(T=3, B=2, I=3, H=4, layers=3, dropout=1.0, train=True)
    torch.library.opcheck(OP.default, tuple(a.values()))


@pytest.mark.parametrize("case", list(CASES))
def test_gradcheck(case):
    a = op_args(T=4, B=3, I=3, H=3, **CASES[case])
    assert torch.autograd.gradcheck(lambda *ts: OP(**with_leaves(a, ts)), leaves(a), eps=1e-6, atol=1e-7)


def compare_with_reference(a, tol):
    out_f = OP(**a)
    out_r = reference.lstm(**a)
    assert_close_all(out_f, out_r, **tol)
    assert_close_all(grads(out_f, leaves(a)), grads(out_r, leaves(a)), **tol)


@given(
    T=st.integers(1, 6),
    B=st.integers(1, 4),
    I=st.integers(1, 5),
    H=st.integers(1, 5),
    layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    proj=st.booleans(),
    bias=st.booleans(),
    window=st.integers(0, 7),
    reset_p=st.sampled_from([0.0, 0.2, 0.6]),
    packed=st.booleans(),
    with_hx=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fused_matches_reference(T, B, I, H, layers, bidirectional, proj, bias, window, reset_p, packed, with_hx, seed):
    lengths = None
    if packed:
        g = torch.Generator().manual_seed(seed)
        lengths = sorted(torch.randint(1, T + 1, (B,), generator=g).tolist(), reverse=True)
    a = op_args(T, B, I, H, layers, bidirectional, H - 1 if proj and H > 1 else 0, bias, lengths, reset_p, window,
                with_hx=with_hx, seed=seed)  # fmt: skip
    compare_with_reference(a, dict(rtol=1e-9, atol=1e-10))


def test_float32_matches_reference():
    a = op_args(9, 5, 6, 7, proj=3, reset_p=0.2, lengths=[9, 7, 7, 2, 1], window=3, dtype=torch.float32)
    compare_with_reference(a, dict(rtol=1e-4, atol=1e-5))


@pytest.mark.parametrize("case", ["stack", "proj", "packed"])
def test_expanded_output_gradient_is_read_as_dense(case):
    """The gradient of y.sum() is one value that autograd expands to every
    row; the backward reads it without copying it out. Same bits as the same
    values given dense."""
    a = op_args(**CASES[case], dtype=torch.float32)
    y = OP(**a)[0]
    g = torch.full((), 0.7).expand(y.shape)
    assert g.stride() == (0,) * y.dim()
    expanded = torch.autograd.grad(y, leaves(a), g, retain_graph=True)
    dense = torch.autograd.grad(y, leaves(a), g.contiguous())
    for u, v in zip(expanded, dense):
        assert torch.equal(u, v)


@pytest.mark.parametrize("split", ["units", "samples"])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("H", [32, 37])
def test_input_projection_in_passes_of_steps(packed, H, split, monkeypatch):
    # The CPU projects the input a few steps at a time (ceil(128 / B) steps at
    # B = 40), on every thread of the team: a sequence of many passes, the
    # reverse direction's passes running backwards over the packed rows, the
    # last panel partly filled at H = 37. Saving for backward, the passes
    # write the saved gates; in inference, a buffer of one pass, where
    # threads that split the samples run up to a pass apart.
    monkeypatch.setenv("RNNKERNELS_CPU_SPLIT", split)
    g = torch.Generator().manual_seed(1)
    lengths = sorted(torch.randint(1, 24, (40,), generator=g).tolist(), reverse=True) if packed else None
    a = op_args(T=23, B=40, I=20, H=H, proj=0, reset_p=0.1, window=5, lengths=lengths)
    compare_with_reference(a, dict(rtol=1e-9, atol=1e-10))
    detached = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in a.items()}
    detached["params"] = [p.detach() for p in a["params"]]
    with torch.no_grad():
        assert_close_all(OP(**detached), reference.lstm(**detached), rtol=1e-9, atol=1e-10)


def test_float32_gate_math_is_within_a_few_ulp():
    # Bias-only pre-activations (zero weights, zero state) over a wide range:
    # one step gives c = sigmoid(i) * tanh(g) and h = sigmoid(o) * tanh(c),
    # through the vector exp, tanh and reciprocals, on 48 units (whole
    # AVX-512 and AVX2 vectors).
    H, B = 48, 64
    pre = torch.linspace(-30, 30, 4 * H * B, dtype=torch.float64).view(B, 4, H)
    outs, want = [], []
    for b in range(B):
        a = op_args(T=1, B=1, I=1, H=H, layers=1, bidirectional=False, with_hx=False, dtype=torch.float32)
        params = [torch.zeros(4 * H, 1), torch.zeros(4 * H, H), pre[b].reshape(-1).float(), torch.zeros(4 * H)]
        args = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in a.items()}
        args["params"] = params
        with torch.no_grad():
            _, h, c = OP(**args)
        p = pre[b].float().double()
        c64 = torch.sigmoid(p[0]) * torch.tanh(p[2])
        outs.append(torch.cat([h.view(-1), c.view(-1)]).double())
        want.append(torch.cat([torch.sigmoid(p[3]) * torch.tanh(c64), c64]))
    got, exact = torch.cat(outs), torch.cat(want)
    ulp = torch.finfo(torch.float32).eps * exact.abs().float().clamp_min(torch.finfo(torch.float32).tiny).double()
    assert ((got - exact).abs() / ulp).max() < 4  # 3.0 measured: c's own error carries through tanh


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_input_deeper_than_one_depth_block(dtype):
    # The projection starts from the bias in its first block of 2048 input
    # features and adds the later blocks onto it.
    a = op_args(T=3, B=2, I=2100, H=20, layers=1, dtype=dtype)
    compare_with_reference(a, dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4))


class CountOps(TorchDispatchMode):
    """The rnnkernels ops called under it: their names and arguments."""

    def __init__(self):
        super().__init__()
        self.calls, self.args = [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "rnnkernels":
            self.calls.append(func.__name__)
            self.args.append(args)
        return func(*args, **(kwargs or {}))


def test_one_call_per_forward_and_one_per_backward():
    import rnnkernels

    m = rnnkernels.LSTM(8, 8, num_layers=3, bidirectional=True)
    x = torch.randn(1, 1, 8, requires_grad=True)
    with CountOps() as count:
        y, (h, c) = m(x)
    assert count.calls == ["lstm_forward.default"]
    with CountOps() as count:
        (y.sum() + h.sum() + c.sum()).backward()
    assert count.calls == ["lstm_backward.default"]
    with torch.no_grad(), CountOps() as count:
        m(x)
    assert count.calls == ["lstm.default"]


def test_weight_gradients_only_when_a_parameter_needs_one():
    """A backward from which no parameter needs a gradient (a frozen LSTM
    under a trained input, or autograd.grad with respect to the input alone)
    skips the weight GEMMs; the other gradients keep their bits."""
    import rnnkernels

    torch.manual_seed(0)
    m = rnnkernels.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3, dtype=torch.float64)
    x = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    state = tuple(torch.randn(4, 3, n, dtype=torch.float64, requires_grad=True) for n in (3, 6))

    def backward(wrt):
        y, (h, c) = m(x, state)
        with CountOps() as count:
            g = grads((y, h, c), wrt)
        assert count.calls == ["lstm_backward.default"]
        return g, count.args[0][-1]  # need_weight_grad

    full, need = backward([x, *state, *m.parameters()])
    assert need
    for got, need_weights in (backward([x, *state]), backward([state[1]])):
        assert not need_weights
        assert all(torch.equal(g, w) for g, w in zip(got, (full[:3] if len(got) == 3 else full[2:3])))
    m.requires_grad_(False)
    got, need = backward([x, *state])
    assert not need and all(torch.equal(g, w) for g, w in zip(got, full[:3]))
    m.weight_hh_l1.requires_grad_(True)
    got, need = backward([x, m.weight_hh_l1])
    names = [n for n, _ in m.named_parameters()]
    assert need and torch.equal(got[1], full[3 + names.index("weight_hh_l1")])


def test_inference_saves_nothing():
    a = op_args(lengths=[5, 3, 3], reset_p=0.2, window=2)
    args = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in a.items()}
    args["params"] = [p.detach() for p in a["params"]]
    output, hy, cy, saved = torch.ops.rnnkernels.lstm_forward(*args.values(), False)
    assert saved == []
    want = reference.lstm(**args)
    assert_close_all((output, hy, cy), want, rtol=1e-12, atol=1e-12)


# --- the fake kernels raise what the C++ checks raise --------------------------

BAD = {
    "integer input": lambda a: a.update(input=a["input"].long()),
    "2-D unpacked input": lambda a: a.update(input=a["input"][0]),
    "4 params for 2 groups": lambda a: a.update(params=a["params"][:4]),
    "w_ih not 4H rows": lambda a: a["params"].__setitem__(0, torch.zeros(7, 4, dtype=torch.float64)),
    "w_hh shape": lambda a: a["params"].__setitem__(5, torch.zeros(20, 4, dtype=torch.float64)),
    "layer-1 w_ih shape": lambda a: a["params"].__setitem__(8, torch.zeros(20, 4, dtype=torch.float64)),
    "bias dtype": lambda a: a["params"].__setitem__(2, torch.zeros(20, dtype=torch.float32)),
    "hx shape": lambda a: a.update(hx=a["hx"][:3]),
    "cx dtype": lambda a: a.update(cx=a["cx"].float()),
    "reset dtype": lambda a: a.update(reset=torch.zeros(5, 3)),
    "reset shape": lambda a: a.update(reset=torch.zeros(3, 5, dtype=torch.bool)),
    "negative window": lambda a: a.update(window=-1),
    "no layers": lambda a: a.update(num_layers=0),
    "dropout above 1": lambda a: a.update(dropout=1.5),
    "bad batch_sizes": lambda a: a.update(input=a["input"][0], batch_sizes=torch.tensor([2, 3])),
    "batch_sizes sum": lambda a: a.update(input=a["input"][0], batch_sizes=torch.tensor([2, 1])),
    "batch_sizes dtype": lambda a: a.update(input=a["input"][0], batch_sizes=torch.tensor([3.0])),
}


def _raised(fn):
    with pytest.raises(RuntimeError) as info:
        fn()
    return str(info.value).split("\n")[0]


@pytest.mark.parametrize("case", list(BAD))
def test_fake_kernels_mirror_the_cpp_checks(case):
    a = op_args()
    a = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in a.items()}
    a["params"] = [p.detach() for p in a["params"]]
    BAD[case](a)
    cpu = _raised(lambda: OP(**a))
    assert cpu.startswith("rnnkernels.lstm: ")
    to_meta = lambda t: t if t is None or t is a["batch_sizes"] else t.to("meta")  # noqa: E731
    meta = {k: to_meta(v) if isinstance(v, torch.Tensor) else v for k, v in a.items()}
    meta["params"] = [to_meta(p) for p in a["params"]]
    assert _raised(lambda: OP(**meta)) == cpu
    # The module's own checks come first; a direct call still names the argument.
    assert re.search(r"input|params|weight|bias|hx|cx|reset|window|layers|dropout|batch_sizes", cpu)
