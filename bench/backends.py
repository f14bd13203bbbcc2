"""The contenders. Each builder returns a Runner over its own copy of the
same weights, or raises Skip with the reason it cannot run this config."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import shutil
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

from . import loops

BASELINE = "nn.LSTM"


class Skip(Exception):  # noqa: N818 - a verdict, not an error
    """This backend cannot run this configuration; the message says why."""


@dataclasses.dataclass
class Runner:
    """forward(x, reset) -> output (T, B, dirs*P); params in nn.LSTM's
    `_flat_weights_names` order; context() wraps every call (flags); module,
    if any, is what train() switches (nn.LSTM hands its mode to oneDNN)."""

    forward: Callable
    params: list
    context: Callable = contextlib.nullcontext
    note: str | None = None
    module: nn.Module | None = None

    def __call__(self, x, reset):
        with self.context():
            return self.forward(x, reset)

    def train(self, mode: bool) -> None:
        if self.module is not None:
            self.module.train(mode)


def _flat(module) -> list:
    return [getattr(module, n) for n in module._flat_weights_names]


def _rnnkernels(cfg, base, device, backend):
    try:
        import rnnkernels
    except ImportError as exc:
        raise Skip(f"rnnkernels does not import: {exc}") from None
    info = rnnkernels.backend_info()
    if backend == "fused":
        if not info["cpu_extension"]:
            raise Skip(f"extension not built: {info['reason']}")
        if device.type == "cuda" and not info["cuda_extension"]:
            raise Skip(f"no CUDA kernels: {info['reason']}")
    m = rnnkernels.LSTM(cfg.I, cfg.H, backend=backend, **cfg.lstm_kwargs(device))
    m.load_state_dict(base.state_dict())
    window = cfg.window

    def forward(x, reset):
        return m(x, window=window, reset=reset)[0]

    return Runner(forward, _flat(m), module=m)


def chunk_starts(T: int, window: int, reset) -> list[int]:
    """Times where nn.LSTM must stop and touch the state: window boundaries
    (detach) and steps where any sample resets (zero that sample)."""
    starts = set(range(window, T, window)) if window else set()
    if reset is not None:
        starts |= {int(t) for t in reset[1:].any(dim=1).nonzero().flatten() + 1}
    return sorted(starts)


def _nn_lstm(cfg, base, device, generic=False, float32=False):
    if cfg.bidirectional and (cfg.window or cfg.reset):
        raise Skip("window/reset with bidirectional: chunked nn.LSTM cannot carry the reverse direction's state")
    if float32 and cfg.dtype == "float32":
        raise Skip("the config is float32: this is nn.LSTM itself")
    m = copy.deepcopy(base).requires_grad_()
    m = m.float() if float32 else m
    if generic:
        flags = torch.backends.cudnn.flags if device.type == "cuda" else torch.backends.mkldnn.flags

        @contextlib.contextmanager
        def context():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # mkldnn.flags warns about TF32 on CPU builds
                with flags(enabled=False):
                    yield
    else:
        context = contextlib.nullcontext
    window = cfg.window
    segments = {}  # the chunking depends only on the mask: found once, as a data loader would

    def forward(x, reset):
        if float32:  # what users do when a dtype has no fast nn.LSTM: compute in float32
            return chunked(x.float(), reset).to(x.dtype)
        return chunked(x, reset)

    def chunked(x, reset):
        if not window and reset is None:
            return m(x)[0]
        # Truncated BPTT / document resets as users write it with nn.LSTM:
        # one call per chunk, the state detached or masked in between.
        key = (x.size(0), id(reset))
        if key not in segments:
            segments[key] = [0] + chunk_starts(x.size(0), window, reset) + [x.size(0)]
        bounds = segments[key]
        state, outs = None, []
        for a, b in zip(bounds[:-1], bounds[1:]):
            if state is not None:
                h, c = state
                if window and a % window == 0:
                    h, c = h.detach(), c.detach()
                if reset is not None:
                    keep = (~reset[a]).to(h.dtype)[None, :, None]
                    h, c = h * keep, c * keep
                state = (h, c)
            out, state = m(x[a:b], state)
            outs.append(out)
        return torch.cat(outs)

    notes = (["float32 copy, input and output cast"] if float32 else []) + (
        ["chunked: one call per window/reset segment"] if cfg.window or cfg.reset else []
    )
    return Runner(forward, _flat(m), context, "; ".join(notes) or None, module=m)


def _loop_weights(cfg, base):
    """Own leaf copies of base's weights, and the per-(layer, direction) tuples run_stack wants."""
    names = base._flat_weights_names
    params = [getattr(base, n).detach().clone().requires_grad_(True) for n in names]
    by_name = dict(zip(names, params))

    def weights():
        out = {}
        for layer in range(cfg.layers):
            for d in range(2 if cfg.bidirectional else 1):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                bias = by_name[f"bias_ih{sfx}"] + by_name[f"bias_hh{sfx}"]
                out[(layer, d)] = (
                    by_name[f"weight_ih{sfx}"],
                    by_name[f"weight_hh{sfx}"],
                    bias,
                    by_name.get(f"weight_hr{sfx}"),
                )
        return out

    return params, weights


@functools.cache
def _scripted_loop():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated; it is still the fastrnns peer
        return torch.jit.script(loops.scripted_loop)


def _torchscript(cfg, base, device):
    try:
        loop = _scripted_loop()
    except Exception as exc:  # noqa: BLE001
        raise Skip(f"torch.jit.script failed: {type(exc).__name__}: {exc}") from None
    params, weights = _loop_weights(cfg, base)

    def forward(x, reset):
        return loops.run_stack(loop, weights(), x, cfg, reset)

    return Runner(forward, params)


def compiler_problem(device) -> str | None:
    """Why torch.compile cannot work here, or None."""
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    if device.type == "cpu":
        from torch._inductor import config as inductor_config

        cxx = inductor_config.cpp.cxx
        names = [c for c in (cxx if isinstance(cxx, tuple) else (cxx,)) if c] or ["g++"]
        if not any(shutil.which(c) for c in names):
            return f"no C++ compiler found (looked for {', '.join(names)}); inductor needs one on CPU"
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "triton is not installed; inductor needs it on CUDA"
    return None


def _torch_compile(cfg, base, device):
    problem = compiler_problem(device)
    if problem:
        raise Skip(problem)
    # One small graph (a cell step) reused for every step keeps compile time
    # bounded and independent of T. A fresh start per config keeps its compile
    # cost attributable and stays clear of dynamo's recompile limit, past
    # which it would silently run eager.
    torch._dynamo.reset()
    cell = torch.compile(loops.lstm_cell, dynamic=False)
    params, weights = _loop_weights(cfg, base)

    def loop(pre, h, c, w_hh, w_hr, keep, cuts):
        return loops.python_loop(cell, pre, h, c, w_hh, w_hr, keep, cuts)

    def forward(x, reset):
        return loops.run_stack(loop, weights(), x, cfg, reset)

    return Runner(forward, params, note="compiled cell step in a Python loop")


BUILDERS = {
    "rnnkernels": lambda cfg, base, device: _rnnkernels(cfg, base, device, "fused"),
    "reference": lambda cfg, base, device: _rnnkernels(cfg, base, device, "reference"),
    "nn.LSTM": _nn_lstm,
    "nn.LSTM-float32": lambda cfg, base, device: _nn_lstm(cfg, base, device, float32=True),
    "nn.LSTM-generic": lambda cfg, base, device: _nn_lstm(cfg, base, device, generic=True),
    "torchscript": _torchscript,
    "torch.compile": _torch_compile,
}
NAMES = tuple(BUILDERS)


def build(name: str, cfg, base: nn.LSTM, device: torch.device) -> Runner:
    if name not in BUILDERS:
        raise ValueError(f"unknown backend {name!r}; one of {NAMES}")
    return BUILDERS[name](cfg, base, device)


def first_calls(runner: Runner, x, reset) -> float:
    """One forward without grad and one with backward, in seconds: the
    compile / profiling cost, kept out of the measurements."""
    t0 = time.perf_counter()
    runner.train(False)
    with torch.no_grad():
        runner(x, reset)
    runner.train(True)
    out = runner(x.detach().requires_grad_(True), reset)
    out.sum().backward()
    for p in runner.params:
        p.grad = None
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0
