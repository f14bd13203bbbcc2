"""The CPU time loops run on a team of threads that share out units and
columns and meet at barriers, or share out samples and never meet (small
weights); a layer's two directions run one after the other on the team, or
at once, one thread each. At sizes where the team has two threads and
partial last shares, every feature gives the reference's values, and the
same bits as one thread (the split changes who computes an element, never
how), every way."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import Sizes, config_outputs_and_grads, forward_config, make_config, num_threads, requires_extension

pytestmark = requires_extension

# H and P are not multiples of a panel (16 floats, 8 doubles), and one step's
# product is far above the size where the loops start a team.
T, B, I, H, P = 9, 11, 20, 76, 42

CONFIGS = {
    "plain": dict(),
    "bidir-packed": dict(bidirectional=True, packed=True),
    "proj-reset-window": dict(num_layers=2, proj_size=P, reset=True, window=4),
    "narrow-proj": dict(proj_size=5, reset=True),  # one column share, several unit shares
    "all": dict(num_layers=2, bidirectional=True, proj_size=P, packed=True, reset=True, window=3),
}


def run(config, dtype, backend, threads):
    with num_threads(threads):
        return config_outputs_and_grads(config, dtype, Sizes(T, B, I, H), backend=backend, reset_p=0.2)


# The loops' ways to share a step between threads (RNNKERNELS_CPU_SPLIT), a
# layer's directions one after the other; and the directions at once, one
# thread each (RNNKERNELS_CPU_DIRECTIONS).
WAYS = {
    "units": dict(RNNKERNELS_CPU_SPLIT="units", RNNKERNELS_CPU_DIRECTIONS="apart"),
    "samples": dict(RNNKERNELS_CPU_SPLIT="samples", RNNKERNELS_CPU_DIRECTIONS="apart"),
    "together": dict(RNNKERNELS_CPU_DIRECTIONS="together"),
}


def share(monkeypatch, split):
    for name, value in WAYS[split].items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("split", list(WAYS))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_two_threads_match_the_reference(config, split, monkeypatch):
    share(monkeypatch, split)
    got = run(CONFIGS[config], torch.float64, "fused", threads=2)
    want = run(CONFIGS[config], torch.float64, "reference", threads=2)
    for i, (u, v) in enumerate(zip(got, want)):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12, msg=lambda m: f"item {i}: {m}")


# Not "narrow-proj": its dW_hr is a closing GEMM of 5 rows, which MKL's sgemm
# itself rounds differently with 2 threads (as torch.mm does for such sizes).
@pytest.mark.parametrize("split", list(WAYS))
@pytest.mark.parametrize("gemm", ["panels", "aten"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("config", [c for c in CONFIGS if c != "narrow-proj"])
def test_two_threads_give_the_bits_of_one(config, dtype, gemm, split, monkeypatch):
    share(monkeypatch, split)
    if gemm == "aten":
        monkeypatch.setenv("RNNKERNELS_CPU_GEMM", "aten")
    one = run(CONFIGS[config], dtype, "fused", threads=1)
    two = run(CONFIGS[config], dtype, "fused", threads=2)
    for i, (u, v) in enumerate(zip(one, two)):
        if gemm == "panels":
            assert torch.equal(u, v), f"item {i}: max abs diff {(u - v).abs().max().item():.3g}"
        else:  # at::mm on a thread's columns may round differently from a whole product
            torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)


def infer(config, dtype, backend, threads, sizes):
    """y, h, c under no_grad; with packing, one sample runs all T steps."""
    with num_threads(threads), torch.no_grad():
        m, x, lengths, kw = make_config(config, dtype, sizes, backend=backend, reset_p=0.2)
        if lengths is not None:
            lengths[0] = sizes.T
        return forward_config(m, x, lengths, kw)


# Inference projects the input in passes of several steps into a buffer of
# one pass: T = 40 makes many passes; threads that split the samples drift
# apart by any number of steps and must never share its rows.
@pytest.mark.parametrize("split", list(WAYS))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_inference_matches_the_reference_and_one_thread(config, split, monkeypatch):
    share(monkeypatch, split)
    sizes = Sizes(40, 24, I, H)
    got = infer(CONFIGS[config], torch.float64, "fused", 2, sizes)
    want = infer(CONFIGS[config], torch.float64, "reference", 1, sizes)
    for i, (u, v) in enumerate(zip(got, want)):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12, msg=lambda m: f"item {i}: {m}")
    one = infer(CONFIGS[config], torch.float32, "fused", 1, sizes)
    two = infer(CONFIGS[config], torch.float32, "fused", 2, sizes)
    assert all(torch.equal(u, v) for u, v in zip(one, two))


SHORT_TEAM = f"""
import torch, rnnkernels
def run(threads, train, bidirectional):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m = rnnkernels.LSTM({I}, {H}, bidirectional=bidirectional, dtype=torch.float64)
    x = torch.randn(9, 24, {I}, dtype=torch.float64, requires_grad=train)
    with torch.set_grad_enabled(train):
        y, (h, c) = m(x)
        out = [y, h, c]
        if train:
            out += torch.autograd.grad(y.square().sum() + h.sum() + c.sum(), [x, *m.parameters()])
    return out
for train in (False, True):
    for bi in (False, True):
        for i, (u, v) in enumerate(zip(run(2, train, bi), run(1, train, bi))):
            assert torch.equal(u, v), f"train={{train}} bi={{bi}} item {{i}}: {{(u - v).abs().max().item():.3g}}"
"""


# OpenMP may give a team fewer threads than it asked for (here always:
# OMP_THREAD_LIMIT=1); the threads it has must then take every share.
@pytest.mark.parametrize("split", list(WAYS))
def test_a_smaller_team_than_asked_for_computes_every_sample(split):
    env = dict(os.environ, OMP_THREAD_LIMIT="1", **WAYS[split])
    run = subprocess.run([sys.executable, "-c", SHORT_TEAM], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]


# Steps too small to split (2 samples of 16 units) run on one thread, which
# still shares each pass's input projection (128 rows by 256 inputs by 64
# gate columns) with ATen's other threads, panel by panel. Not both
# directions: those run at once, a thread each, with nothing to share.
@pytest.mark.parametrize(
    "config", [dict(), dict(num_layers=2, proj_size=5, reset=True, window=3)], ids=["plain", "features"]
)
def test_a_loop_on_one_thread_shares_its_input_projection(config):
    sizes = Sizes(64, 2, 256, 16)

    def outputs(backend, threads):
        with num_threads(threads):
            return config_outputs_and_grads(config, torch.float64, sizes, backend=backend, reset_p=0.2)

    two, one, want = outputs("fused", 2), outputs("fused", 1), outputs("reference", 1)
    for i, (u, v, w) in enumerate(zip(two, one, want)):
        assert torch.equal(u, v), f"item {i}: max abs diff {(u - v).abs().max().item():.3g}"
        torch.testing.assert_close(u, w, rtol=1e-10, atol=1e-12, msg=lambda m: f"item {i}: {m}")
    got, want = infer(config, torch.float64, "fused", 2, sizes), infer(config, torch.float64, "reference", 1, sizes)
    for i, (u, v) in enumerate(zip(got, want)):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12, msg=lambda m: f"item {i}: {m}")


def ran_unit_major(fn):
    """fn's result, and whether a forward loop with the weights as A ran in it."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = fn()
    return out, any(e.name == "rnnkernels::forward_unit_major" for e in prof.events())


# A call whose batch fills at least two whole panels (32 floats, 16 doubles)
# and has fewer samples in all (T * B) than the weights have rows (4H) runs its
# forward products with the weights as A, unit-major
# (lstm_forward_unit_major.cpp): the reference's values, and the same bits as
# the loop on packed weights (RNNKERNELS_CPU_WEIGHTS=packed) and as one thread,
# in inference and in a training step (outputs and every gradient). 20
# samples, a packed batch, or more steps take the loop on packed weights.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "config", [dict(), dict(num_layers=2, bidirectional=True, reset=True)], ids=["plain", "bidir-reset"]
)
def test_the_unit_major_forward_gives_the_bits_of_packed_weights(config, dtype, monkeypatch):
    monkeypatch.setenv("RNNKERNELS_CPU_SPLIT", "units")  # H64 alone would split by samples
    monkeypatch.setenv("RNNKERNELS_CPU_DIRECTIONS", "apart")
    sizes = Sizes(7, 32, 20, 64)

    def train():
        return config_outputs_and_grads(config, dtype, sizes, reset_p=0.2)

    got, ran = ran_unit_major(lambda: infer(config, dtype, "fused", 2, sizes))
    assert ran
    want = infer(config, dtype, "reference", 1, sizes)
    for i, (u, v) in enumerate(zip(got, want)):
        torch.testing.assert_close(u, v, msg=lambda m: f"item {i}: {m}")
    trained, ran = ran_unit_major(train)
    assert ran
    one = infer(config, dtype, "fused", 1, sizes)
    monkeypatch.setenv("RNNKERNELS_CPU_WEIGHTS", "packed")
    packed, ran = ran_unit_major(lambda: infer(config, dtype, "fused", 2, sizes))
    assert not ran
    trained_packed = train()
    for other in (trained[:3], one, packed):
        for i, (u, v) in enumerate(zip(got, other)):
            assert torch.equal(u, v), f"item {i}: max abs diff {(u - v).abs().max().item():.3g}"
    for i, (u, v) in enumerate(zip(trained, trained_packed)):
        assert torch.equal(u, v), f"item {i}: max abs diff {(u - v).abs().max().item():.3g}"
    monkeypatch.delenv("RNNKERNELS_CPU_WEIGHTS")
    assert not ran_unit_major(lambda: infer(config, dtype, "fused", 2, Sizes(7, 20, 20, 64)))[1]
    assert not ran_unit_major(lambda: infer(dict(config, packed=True), dtype, "fused", 2, sizes))[1]
    assert not ran_unit_major(lambda: infer(config, dtype, "fused", 2, Sizes(9, 32, 20, 64)))[1]
