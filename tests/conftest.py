import hashlib
import os
import tempfile
from contextlib import contextmanager
from typing import NamedTuple

import pytest
import torch
from hypothesis import settings
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkernels

# Inductor's on-disk cache does not see a custom op's fake kernel change: a
# graph compiled against an older build could be replayed. One cache per
# build of the extension and its Python face.
_build = hashlib.sha256()
for _path in (rnnkernels.ops.__file__, getattr(rnnkernels._extension._C, "__file__", None)):
    if _path:
        _build.update(f"{_path}:{os.stat(_path).st_mtime_ns}".encode())
os.environ.setdefault(
    "TORCHINDUCTOR_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"rnnkernels-inductor-{_build.hexdigest()[:16]}")
)

# "ci" keeps property tests to a budget that runs in CI; "long" is for local runs.
settings.register_profile("ci", max_examples=40, deadline=None, print_blob=True)
settings.register_profile("long", max_examples=1000, deadline=None, print_blob=True)
settings.load_profile("ci")


@contextmanager
def num_threads(n):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread avoids waking the pool and spinning on a shared machine."""
    with num_threads(1):
        yield


requires_extension = pytest.mark.skipif(
    not rnnkernels.backend_info()["cpu_extension"], reason="rnnkernels extension not built"
)


def lstm_pair(*args, dtype=torch.float64, seed=0, backend="fused", **kwargs):
    """nn.LSTM and rnnkernels.LSTM with the same configuration and weights."""
    torch.manual_seed(seed)
    ref = nn.LSTM(*args, dtype=dtype, **kwargs)
    ours = rnnkernels.LSTM(*args, dtype=dtype, backend=backend, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


class ChunkedLSTM(nn.Module):
    """An LSTM run over chunks of k steps with the state detached between
    them: the oracle of window=k (one direction: a reverse direction would
    start each chunk from the wrong end)."""

    def __init__(self, lstm, k):
        super().__init__()
        self.lstm, self.k = lstm, k

    def forward(self, x, hx=None):
        dim = 1 if self.lstm.batch_first else 0
        T, ys = x.shape[dim], []
        for start in range(0, T, self.k):
            if start:
                hx = tuple(s.detach() for s in hx)
            y, hx = self.lstm(x.narrow(dim, start, min(self.k, T - start)), hx)
            ys.append(y)
        return torch.cat(ys, dim), hx


def grads(outputs, inputs, seed=1):
    """Gradients of a random projection of `outputs`, so every output element
    matters with a different weight (a plain sum hides sign errors). The
    projection is drawn in float32 whatever the outputs' dtype, so that a
    float64 run of a float32 case projects by exactly the same values."""
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g).to(o.device, o.dtype)).sum() for o in outputs)
    return torch.autograd.grad(loss, inputs, allow_unused=True)


def assert_close_all(actual, expected, **tol):
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        if a is None or e is None:
            assert a is None and e is None, f"item {i}: one gradient is missing"
            continue
        torch.testing.assert_close(a, e, **tol, msg=lambda m: f"item {i}: {m}")


class Sizes(NamedTuple):
    T: int
    B: int
    I: int  # noqa: E741
    H: int


def make_config(config, dtype, sizes, backend="fused", seed=0, reset_p=0.15):
    """The module and one batch of inputs of a configuration: LSTM keyword
    arguments plus "window", "reset" (a mask drawn with probability reset_p)
    and "packed" (unsorted random lengths)."""
    cfg = dict(config)
    window, reset, packed = cfg.pop("window", 0), cfg.pop("reset", False), cfg.pop("packed", False)
    T, B, I, H = sizes  # noqa: E741
    torch.manual_seed(seed)
    m = rnnkernels.LSTM(I, H, backend=backend, dtype=dtype, **cfg)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(T, B, I, generator=g, dtype=dtype)
    kwargs = dict(window=window)
    if reset:
        kwargs["reset"] = torch.rand(T, B, generator=g) < reset_p
    lengths = torch.randint(1, T + 1, (B,), generator=g) if packed else None
    return m, x, lengths, kwargs


def forward_config(m, x, lengths, kwargs):
    """(y, h, c) of make_config's module on x, packed when lengths are given."""
    inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if lengths is not None else x
    y, (h, c) = m(inp, **kwargs)
    if lengths is not None:
        y, _ = pad_packed_sequence(y, total_length=x.shape[0])
    return y, h, c


def config_outputs_and_grads(config, dtype, sizes, backend="fused", reset_p=0.15):
    """y, h, c and the gradients of a random projection of them with respect
    to x and every parameter."""
    m, x, lengths, kwargs = make_config(config, dtype, sizes, backend=backend, reset_p=reset_p)
    x = x.requires_grad_()
    y, h, c = forward_config(m, x, lengths, kwargs)
    g = torch.Generator().manual_seed(7)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=dtype)).sum() for t in (y, h, c))
    return [y, h, c, *torch.autograd.grad(loss, [x, *m.parameters()])]
