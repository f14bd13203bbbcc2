"""Agreement of each backend with the baseline on one forward+backward: a
fast backend that computes something else must not go unnoticed."""

from __future__ import annotations

import torch

# Relative error above which the table flags a result (float32 accumulations
# over long sequences drift by ~1e-5; real bugs are far above).
TOLERANCE = {"float64": 1e-9, "float32": 1e-3}
DEFAULT_TOLERANCE = 2e-2  # half precision


def outputs_and_grads(runner, x, reset) -> list:
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
