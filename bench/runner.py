"""One configuration end to end: inputs, backends, agreement check, timing, memory."""

from __future__ import annotations

import torch
from torch import nn

from . import backends, memory, timing
from .configs import lstm_flops

# Relative error above which the table flags a result (float32 accumulations
# over long sequences drift by ~1e-5; real bugs are far above).
TOLERANCE = {"float64": 1e-9, "float32": 1e-3}
DEFAULT_TOLERANCE = 2e-2  # half precision


def make_inputs(cfg, device):
    """The shared weights (an nn.LSTM), input and reset mask of a config."""
    torch.manual_seed(0)
    base = nn.LSTM(cfg.I, cfg.H, **cfg.lstm_kwargs(device))
    g = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(cfg.T, cfg.B, cfg.I, generator=g, device=device, dtype=cfg.torch_dtype)
    reset = None
    if cfg.reset:
        reset = torch.rand(cfg.T, cfg.B, generator=g, device=device) < cfg.reset
    return base, x, reset


def outputs_and_grads(runner, x, reset) -> list:
    """Output and gradients of one training forward+backward."""
    runner.train(True)
    xg = x.detach().requires_grad_(True)
    out = runner(xg, reset)
    g = torch.Generator(device=x.device).manual_seed(1)
    # A random projection, not a plain sum: every output matters with its own weight.
    weight = torch.randn(out.shape, generator=g, device=x.device, dtype=out.dtype)
    grads = torch.autograd.grad((out * weight).sum(), [xg] + list(runner.params))
    return [out.detach()] + [gr.detach() for gr in grads]


def max_rel_error(ours: list, ref: list) -> float:
    """Largest max|a-b| / max|b| over the output and every gradient."""
    worst = 0.0
    for a, b in zip(ours, ref):
        scale = b.abs().max().item() or 1.0
        worst = max(worst, (a.double() - b.double()).abs().max().item() / scale)
    return worst


def verify_all(cfg, runners, x, reset, notes) -> dict:
    """{backend: max relative error against nn.LSTM (or the first backend that ran)}:
    a fast backend that computes something else must not go unnoticed."""
    # In half precision nn.LSTM on a float32 copy is the nearest to the exact answer.
    prefer = [backends.BASELINE] if cfg.dtype in TOLERANCE else ["nn.LSTM-float32", backends.BASELINE]
    ref_name = next((n for n in prefer if n in runners), next(iter(runners)))
    if ref_name != backends.BASELINE:
        notes.append(f"{cfg.name}: errors are relative to {ref_name}")
    ref = outputs_and_grads(runners[ref_name], x, reset)
    errors = {ref_name: 0.0}
    for name, runner in runners.items():
        if name == ref_name:
            continue
        try:
            errors[name] = max_rel_error(outputs_and_grads(runner, x, reset), ref)
        except Exception as exc:  # noqa: BLE001 - a failed check is reported, not fatal
            errors[name] = None
            notes.append(f"{cfg.name}: {name} check failed: {type(exc).__name__}: {exc}")
    return errors


def mode_call(runner, x, reset, mode):
    """A zero-argument call of `mode`. The module's mode is set here, once: every
    call of a mode's round runs after its calls are made and before the next mode's."""
    runner.train(mode != "inference")
    if mode == "inference":

        def fn():
            with torch.no_grad():
                runner(x, reset)

        return fn
    xg = x.detach().requires_grad_(True)
    wrt = [xg] + list(runner.params)
    if mode == "fwd":  # grad enabled: the forward saves what a backward would need
        return lambda: runner(xg, reset)

    def fn():
        out = runner(xg, reset)
        # autograd.grad, not backward(): nothing accumulates between repeats.
        torch.autograd.grad(out.sum(), wrt)

    return fn


def run_config(cfg, args, rooflines):
    """Returns (records, skipped, notes) for one config, run as parse_args's `args` say."""
    base, x, reset = make_inputs(cfg, args.device)
    runners, skipped, notes = {}, [], []
    for name in args.backends:
        try:
            runner = backends.build(name, cfg, base, args.device)
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

    errors = verify_all(cfg, runners, x, reset, notes) if not args.no_check and runners else {}
    roof = rooflines.get(cfg.dtype)
    records = []
    for mode in args.modes if runners else ():
        fns = {n: mode_call(r, x, reset, mode) for n, r in runners.items()}
        peaks = {n: memory.peak_bytes(fn, args.device) for n, fn in fns.items()} if not args.no_memory else {}
        samples = timing.interleaved(fns, args.device, args.repeats, args.warmup, args.min_seconds, timing.SAMPLE_MS)
        flops = lstm_flops(cfg, mode)
        base = samples.get(backends.BASELINE)
        for n, s in samples.items():
            med, spread = timing.summarize(s)
            gflops = flops / (med * 1e-3) / 1e9
            peak = peaks.get(n)
            records.append(
                {
                    "config": cfg.as_dict(),
                    "backend": n,
                    "mode": mode,
                    "median_ms": med,
                    "spread": spread,
                    "min_ms": min(s),  # less load-sensitive than the median on a shared machine
                    "samples_ms": s,
                    "speedup_vs_nn_lstm": timing.median_ratio(base, s) if base else None,
                    "gflop": flops / 1e9,
                    "gflops": gflops,
                    "roofline_gflops": roof,
                    "roofline_fraction": gflops / roof if roof else None,
                    "peak_mib": peak / 2**20 if peak is not None else None,
                    "max_rel_error": errors.get(n),
                    "backend_note": runners[n].note,
                }
            )
    return records, skipped, notes
