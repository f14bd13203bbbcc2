import pytest
import torch
from hypothesis import settings
from torch import nn

import rnnkernels

# "ci" keeps property tests to a budget that runs in CI; "long" is for local runs.
settings.register_profile("ci", max_examples=40, deadline=None, print_blob=True)
settings.register_profile("long", max_examples=1000, deadline=None, print_blob=True)
settings.load_profile("ci")

@pytest.fixture
def one_thread():
    """Tiny tensors: one thread avoids waking the pool and spinning on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def grads(outputs, inputs, seed=1):
    """Gradients of a random projection of `outputs`, so every output element
    matters with a different weight (a plain sum hides sign errors)."""
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype).to(o.device)).sum() for o in outputs)
    return torch.autograd.grad(loss, inputs, allow_unused=True)


def assert_close_all(actual, expected, **tol):
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        if a is None or e is None:
            assert a is None and e is None, f"item {i}: one gradient is missing"
            continue
        torch.testing.assert_close(a, e, **tol, msg=lambda m: f"item {i}: {m}")
