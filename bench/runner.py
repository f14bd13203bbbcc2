"""One configuration end to end: inputs, backends, check, timing, memory."""

from __future__ import annotations

import torch
from torch import nn

from . import backends, check, memory, roofline, timing
from .flops import lstm_flops

MODES = ("fwd", "fwd+bwd")
GEMM = "__gemm__"  # the roofline GEMM, timed in the same rounds as the backends


def make_inputs(cfg, device):
    """The shared weights (an nn.LSTM), input and reset mask of a config."""
    torch.manual_seed(0)
    base = nn.LSTM(cfg.I, cfg.H, num_layers=cfg.layers, bidirectional=cfg.bidirectional, proj_size=cfg.proj,
                   device=device, dtype=cfg.torch_dtype)
    g = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(cfg.T, cfg.B, cfg.I, generator=g, device=device, dtype=cfg.torch_dtype)
    reset = None
    if cfg.reset:
        reset = torch.rand(cfg.T, cfg.B, generator=g, device=device) < cfg.reset
    return base, x, reset


def _call(runner, x, reset, mode):
    if mode == "fwd":
        def fn():
            with torch.no_grad():
                runner(x, reset)
        return fn
    xg = x.detach().requires_grad_(True)
    wrt = [xg] + list(runner.params)

    def fn():
        out = runner(xg, reset)
        # autograd.grad, not backward(): nothing accumulates between repeats.
        torch.autograd.grad(out.sum(), wrt)
    return fn


def verify_all(cfg, runners, x, reset, notes) -> dict:
    """{backend: max relative error against nn.LSTM (or the first backend that ran)}."""
    ref_name = backends.BASELINE if backends.BASELINE in runners else next(iter(runners))
    if ref_name != backends.BASELINE:
        notes.append(f"{cfg.name}: errors are relative to {ref_name} ({backends.BASELINE} did not run)")
    ref = check.outputs_and_grads(runners[ref_name], x, reset)
    errors = {ref_name: 0.0}
    for name, runner in runners.items():
        if name == ref_name:
            continue
        try:
            errors[name] = check.max_rel_error(check.outputs_and_grads(runner, x, reset), ref)
        except Exception as exc:  # noqa: BLE001 - a failed check is reported, not fatal
            errors[name] = None
            notes.append(f"{cfg.name}: {name} check failed: {type(exc).__name__}: {exc}")
    return errors


def run_config(cfg, names, device, repeats, warmup, rooflines, measure_memory=True, verify=True):
    """Returns (records, skipped, notes) for one config."""
    base, x, reset = make_inputs(cfg, device)
    runners, skipped, notes = {}, [], []
    for name in names:
        try:
            runner = backends.build(name, cfg, base, device)
            seconds = backends.first_calls(runner, x, reset)
        except backends.Skip as exc:
            skipped.append({"config": cfg.name, "backend": name, "reason": str(exc)})
            continue
        except Exception as exc:  # noqa: BLE001 - report a broken backend, keep the others
            skipped.append({"config": cfg.name, "backend": name, "reason": f"failed: {type(exc).__name__}: {exc}"})
            continue
        runners[name] = runner
        if name == "torch.compile":
            notes.append(f"{cfg.name}: torch.compile first calls (compile) took {seconds:.1f} s, not timed")

    errors = verify_all(cfg, runners, x, reset, notes) if verify and runners else {}

    records = []
    gemm, gemm_flops = roofline.gemm_call(cfg.torch_dtype, device)
    for mode in MODES:
        fns = {n: _call(r, x, reset, mode) for n, r in runners.items()}
        peaks = {n: memory.peak_bytes(fn, device) for n, fn in fns.items()} if measure_memory else {}
        samples = timing.interleaved({**fns, GEMM: gemm} if fns else {}, device, repeats, warmup)
        gemm_ms = samples.pop(GEMM, None)
        # The GEMM rate during these very rounds, so load that drifts in or out
        # of a shared machine moves the roofline too; the header's is a fallback.
        roof = gemm_flops / (timing.summarize(gemm_ms)[0] * 1e-3) / 1e9 if gemm_ms else rooflines.get(cfg.dtype)
        flops = lstm_flops(cfg, mode)
        medians = {n: timing.summarize(s)[0] for n, s in samples.items()}
        base_ms = medians.get(backends.BASELINE)
        for n, s in samples.items():
            med, spread = timing.summarize(s)
            gflops = flops / (med * 1e-3) / 1e9
            peak = peaks.get(n)
            records.append({
                "config": cfg.as_dict(),
                "backend": n,
                "mode": mode,
                "median_ms": med,
                "spread": spread,
                "min_ms": min(s),  # less load-sensitive than the median on a shared machine
                "samples_ms": s,
                "speedup_vs_nn_lstm": base_ms / med if base_ms else None,
                "gflop": flops / 1e9,
                "gflops": gflops,
                "roofline_gflops": roof,
                "roofline_fraction": gflops / roof if roof else None,
                "peak_mib": peak / 2**20 if peak is not None else None,
                "max_rel_error": errors.get(n),
                "backend_note": runners[n].note,
            })
    return records, skipped, notes
