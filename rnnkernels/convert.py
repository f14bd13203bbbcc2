"""to_nn_lstm: the way back from rnnkernels.LSTM to torch.nn.LSTM.

A model trained with rnnkernels can then be exported to ONNX, or run where
the extension is not installed, through the standard nn.LSTM.
"""

from __future__ import annotations

from torch import nn

from .modules import LSTM


def to_nn_lstm(module: nn.Module) -> nn.Module:
    """The inverse of `replace_lstm`.

    Given an rnnkernels.LSTM, returns a new nn.LSTM with the same configuration
    and a copy of its weights, on the same device and dtype, in the same
    training mode. Given any other module, swaps every rnnkernels.LSTM inside it
    in place (a module held in two places stays one module) and returns it.

    nn.LSTM has no TBPTT window, so a module whose default `window` is nonzero
    is refused with a ValueError; set `window = 0` first if inference does not
    need it. Calls that pass `window=` or `reset=` must go too: nn.LSTM's
    forward does not take them.
    """
    if isinstance(module, LSTM):
        _check_convertible(module)
        return _converted(module)
    # Every name of every parent: named_children() would skip a second name for the same child.
    slots = [
        (parent, name, child)
        for parent in module.modules()
        for name, child in parent._modules.items()
        if isinstance(child, LSTM)
    ]
    # All checked before any is swapped, so a refusal leaves the model as it was.
    for _, _, child in slots:
        _check_convertible(child)
    new = {}
    for parent, name, child in slots:
        if id(child) not in new:
            new[id(child)] = _converted(child)
        setattr(parent, name, new[id(child)])
    return module


def _check_convertible(lstm: LSTM) -> None:
    if lstm.window:
        raise ValueError(
            f"rnnkernels.LSTM with window={lstm.window} cannot become an nn.LSTM, which has no TBPTT window; "
            "set its window to 0 first (the window changes only gradients, not outputs)"
        )


def _converted(old: LSTM) -> nn.LSTM:
    ref = old.weight_ih_l0
    # Built on the meta device, so that the throwaway initialisation neither
    # costs time nor draws from the caller's random number generator.
    new = nn.LSTM(
        old.input_size,
        old.hidden_size,
        num_layers=old.num_layers,
        bias=old.bias,
        batch_first=old.batch_first,
        dropout=old.dropout,
        bidirectional=old.bidirectional,
        proj_size=old.proj_size,
        device="meta",
        dtype=ref.dtype,
    ).to_empty(device=ref.device)
    new.load_state_dict(old.state_dict())
    for name, param in old.named_parameters():
        getattr(new, name).requires_grad_(param.requires_grad)
    new.train(old.training)
    return new
