"""The contenders. Each builder returns a Runner over its own copy of the
same weights, or raises Skip with the reason it cannot run this config."""

from __future__ import annotations

import contextlib
import copy
import shutil
import time
import warnings

import torch
from torch import nn

from . import loops

NAMES = ("rnnkernels", "reference", "nn.LSTM", "nn.LSTM-generic", "torchscript", "torch.compile")
BASELINE = "nn.LSTM"


class Skip(Exception):
    """This backend cannot run this configuration; the message says why."""


class Runner:
    """forward(x, reset) -> output (T, B, dirs*P); params in nn.LSTM's
    `_flat_weights_names` order; context() wraps every call (flags)."""

    def __init__(self, name, forward, params, context=contextlib.nullcontext, note=None):
        self.name = name
        self.forward = forward
        self.params = params
        self.context = context
        self.note = note

    def __call__(self, x, reset):
        with self.context():
            return self.forward(x, reset)


def _own_copy(base: nn.LSTM) -> nn.LSTM:
    m = copy.deepcopy(base)
    for p in m.parameters():
        p.requires_grad_(True)
    return m


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
    m = rnnkernels.LSTM(cfg.I, cfg.H, num_layers=cfg.layers, bidirectional=cfg.bidirectional, proj_size=cfg.proj,
                        device=device, dtype=cfg.torch_dtype, backend=backend)
    m.load_state_dict(base.state_dict())
    window = cfg.window

    def forward(x, reset):
        return m(x, window=window, reset=reset)[0]

    return Runner("rnnkernels" if backend == "fused" else "reference", forward, _flat(m))


def chunk_starts(T: int, window: int, reset) -> list[int]:
    """Times where nn.LSTM must stop and touch the state: window boundaries
    (detach) and steps where any sample resets (zero that sample)."""
    starts = set(range(window, T, window)) if window else set()
    if reset is not None:
        starts |= {int(t) for t in reset[1:].any(dim=1).nonzero().flatten() + 1}
    return sorted(starts)


def _nn_lstm(cfg, base, device, generic):
    if cfg.bidirectional and (cfg.window or cfg.reset):
        raise Skip("window/reset with bidirectional: chunked nn.LSTM cannot carry the reverse direction's state")
    m = _own_copy(base)
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

    note = "chunked: one call per window/reset segment" if (cfg.window or cfg.reset) else None
    return Runner("nn.LSTM-generic" if generic else "nn.LSTM", forward, _flat(m), context, note)


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
                out[(layer, d)] = (by_name[f"weight_ih{sfx}"], by_name[f"weight_hh{sfx}"], bias,
                                   by_name.get(f"weight_hr{sfx}"))
        return out

    return params, weights


_scripted = None


def _torchscript(cfg, base, device):
    global _scripted
    if _scripted is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchScript is deprecated; it is still the fastrnns peer
                _scripted = torch.jit.script(loops.scripted_loop)
        except Exception as exc:  # noqa: BLE001
            raise Skip(f"torch.jit.script failed: {type(exc).__name__}: {exc}") from None
    params, weights = _loop_weights(cfg, base)
    fn = _scripted

    def forward(x, reset):
        return loops.run_stack(fn, weights(), x, cfg, reset)

    return Runner("torchscript", forward, params)


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

    return Runner("torch.compile", forward, params, note="compiled cell step in a Python loop")


def build(name: str, cfg, base: nn.LSTM, device: torch.device) -> Runner:
    if name == "rnnkernels":
        return _rnnkernels(cfg, base, device, "fused")
    if name == "reference":
        return _rnnkernels(cfg, base, device, "reference")
    if name == "nn.LSTM":
        return _nn_lstm(cfg, base, device, generic=False)
    if name == "nn.LSTM-generic":
        return _nn_lstm(cfg, base, device, generic=True)
    if name == "torchscript":
        return _torchscript(cfg, base, device)
    if name == "torch.compile":
        return _torch_compile(cfg, base, device)
    raise ValueError(f"unknown backend {name!r}; one of {NAMES}")


def first_calls(runner: Runner, x, reset) -> float:
    """One forward without grad and one with backward, in seconds: the
    compile / profiling cost, kept out of the measurements."""
    t0 = time.perf_counter()
    with torch.no_grad():
        runner(x, reset)
    out = runner(x.detach().requires_grad_(True), reset)
    out.sum().backward()
    for p in runner.params:
        p.grad = None
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0
