"""Determinism and concurrency on the CPU.

The same inputs give bitwise-equal outputs and gradients run after run, with
1 and with 2 intra-op threads, and in a fresh process (between thread counts
only BLAS rounding may differ). One module used from
several Python threads at once gives the results it gives when used from one.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading

import pytest
import torch

from conftest import Sizes, config_outputs_and_grads, forward_config, make_config, num_threads, requires_extension

pytestmark = requires_extension

# Large enough that the time loops run on a team of two threads and MKL
# splits the GEMMs over all steps.
T, B, I, H = 12, 24, 16, 40
SIZES = Sizes(T, B, I, H)

CONFIGS = {
    "plain": dict(num_layers=1),
    "stack": dict(num_layers=2, bidirectional=True, window=5, reset=True),
    "proj": dict(num_layers=2, proj_size=24, window=3, reset=True),
    "packed": dict(num_layers=2, bidirectional=True, packed=True, window=4),
}


def digest(tensors):
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def assert_bitwise_equal(a, b):
    assert len(a) == len(b)
    for i, (u, v) in enumerate(zip(a, b)):
        assert torch.equal(u, v), f"item {i} differs: max abs diff {(u - v).abs().max().item():.3g}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_bitwise_repeatable_with_one_and_two_threads(config, dtype):
    runs = {}
    for n in (1, 2, 1, 2):
        with num_threads(n):
            result = config_outputs_and_grads(CONFIGS[config], dtype, SIZES)
        if n in runs:
            assert_bitwise_equal(result, runs[n])
        runs[n] = result
    # Across thread counts only rounding may differ: the time loops give the
    # same bits with any team (test_step_team.py), but the GEMMs over all
    # steps are MKL's, whose sgemm picks other kernels for some shapes with 2
    # threads (torch.mm itself differs in the last bit for M = 5, 6, 7, 9, ...).
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    for u, v in zip(runs[1], runs[2]):
        torch.testing.assert_close(u, v, **tol)


_CHILD = """
import sys, torch
sys.path.insert(0, {tests!r})
import test_determinism as d
torch.set_num_threads({threads})
print(d.digest(d.config_outputs_and_grads(d.CONFIGS[{config!r}], torch.float32, d.SIZES)))
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_same_bits_in_a_fresh_process(threads):
    """Allocation addresses and thread pools differ between processes."""
    tests = os.path.dirname(os.path.abspath(__file__))
    code = _CHILD.format(tests=tests, threads=threads, config="stack")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    with num_threads(threads):
        here = digest(config_outputs_and_grads(CONFIGS["stack"], torch.float32, SIZES))
    assert child.stdout.strip().splitlines()[-1] == here


def _in_threads(n_threads, work):
    """Runs work(k) for k in range(n_threads) at once; returns results by k."""
    barrier = threading.Barrier(n_threads)
    results, errors = [None] * n_threads, []

    def body(k):
        try:
            barrier.wait()
            results[k] = work(k)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=body, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


@pytest.fixture
def one_intra_op_thread():
    # Four Python threads each running a team of OpenMP threads on a small
    # machine only oversubscribe it; the sharing is what is tested here.
    with num_threads(1):
        yield


@pytest.mark.parametrize("config", ["stack", "proj", "packed"])
def test_one_module_shared_by_threads_in_inference(config, one_intra_op_thread):
    m, _, lengths, kwargs = make_config(CONFIGS[config], torch.float32, SIZES)
    m.eval()
    inputs = [torch.randn(T, B, I, generator=torch.Generator().manual_seed(100 + k)) for k in range(4 * 5)]
    with torch.no_grad():
        serial = [forward_config(m, x, lengths, kwargs) for x in inputs]

    def work(k):
        with torch.no_grad():
            return [forward_config(m, x, lengths, kwargs) for x in inputs[k::4]]

    got = _in_threads(4, work)
    for k in range(4):
        for want, have in zip(serial[k::4], got[k]):
            assert_bitwise_equal(list(have), list(want))


def test_one_module_shared_by_threads_for_gradients(one_intra_op_thread):
    """torch.autograd.grad from several threads through the same parameters:
    each thread's gradients are those of a serial run (nothing accumulates
    into .grad, so this is legal concurrent use)."""
    m, _, lengths, kwargs = make_config(CONFIGS["stack"], torch.float64, SIZES)
    params = list(m.parameters())
    inputs = [
        torch.randn(T, B, I, dtype=torch.float64, generator=torch.Generator().manual_seed(200 + k))
        for k in range(4 * 2)
    ]

    def grads_of(x):
        x = x.clone().requires_grad_()
        y, h, c = forward_config(m, x, lengths, kwargs)
        loss = (y * y).sum() + h.sum() - c.sum()
        return [y.detach(), *torch.autograd.grad(loss, [x, *params])]

    serial = [grads_of(x) for x in inputs]
    got = _in_threads(4, lambda k: [grads_of(x) for x in inputs[k::4]])
    for k in range(4):
        for want, have in zip(serial[k::4], got[k]):
            assert_bitwise_equal(have, want)
