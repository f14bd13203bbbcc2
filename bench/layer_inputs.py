"""One float32 layer's inputs and weights for the op-level tools
(op_breakdown, feature_cost): what one call of torch.ops.rnnkernels needs."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LayerInputs:
    x: torch.Tensor  # (T, B, I)
    h0: torch.Tensor  # (B, H), zeros
    c0: torch.Tensor  # (B, H), zeros
    w_ih: torch.Tensor  # (4H, I)
    w_hh: torch.Tensor  # (4H, H)
    b: torch.Tensor  # (4H,), zeros; passed as both biases


def layer_inputs(T: int, B: int, I: int, H: int, g: torch.Generator) -> LayerInputs:  # noqa: E741
    """Random x and weights scaled by 1/sqrt(H), drawn from g."""
    return LayerInputs(
        x=torch.randn(T, B, I, generator=g),
        h0=torch.zeros(B, H),
        c0=torch.zeros(B, H),
        w_ih=torch.randn(4 * H, I, generator=g) / H**0.5,
        w_hh=torch.randn(4 * H, H, generator=g) / H**0.5,
        b=torch.zeros(4 * H),
    )
