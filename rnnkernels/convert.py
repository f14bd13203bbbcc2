"""replace_lstm and to_nn_lstm: swapping torch.nn.LSTM for rnnkernels.LSTM
and back, so a model can train on the fused kernels and still be exported to
ONNX, or run where the extension is not installed, through nn.LSTM."""

from __future__ import annotations

from torch import nn

from .modules import LSTM


def replace_lstm(model: nn.Module, **kwargs) -> nn.Module:
    """Swap every torch.nn.LSTM inside `model` for an rnnkernels.LSTM with the
    same configuration, weights, device, dtype, training mode and frozen
    parameters; a module held in two places stays one module. Extra keyword
    arguments (backend, window) go to the new modules. Given an nn.LSTM itself,
    returns the new module; otherwise returns `model`."""
    return _swap(model, lambda m: isinstance(m, nn.LSTM) and not isinstance(m, LSTM), LSTM, kwargs)


def to_nn_lstm(module: nn.Module) -> nn.Module:
    """The inverse of `replace_lstm`. nn.LSTM has no TBPTT window, so a module
    whose default `window` is nonzero is refused with a ValueError (set it to 0
    first: the window changes only gradients). Calls that pass `window=` or
    `reset=` must go too: nn.LSTM's forward does not take them."""
    return _swap(module, lambda m: isinstance(m, LSTM), nn.LSTM, {})


def _swap(model, is_old, new_cls, kwargs):
    if is_old(model):
        _check(model, new_cls)
        return _converted(model, new_cls, kwargs)
    # Every name of every parent: named_children() would skip a second name for the same child.
    slots = [(p, name, c) for p in model.modules() for name, c in p._modules.items() if c is not None and is_old(c)]
    for _, _, child in slots:  # all checked before any is swapped
        _check(child, new_cls)
    new = {}
    for parent, name, child in slots:
        if id(child) not in new:
            new[id(child)] = _converted(child, new_cls, kwargs)
        setattr(parent, name, new[id(child)])
    return model


def _check(old, new_cls):
    if new_cls is nn.LSTM and old.window:
        raise ValueError(
            f"rnnkernels.LSTM with window={old.window} cannot become an nn.LSTM, which has no TBPTT window; "
            "set its window to 0 first (the window changes only gradients, not outputs)"
        )


def _converted(old, new_cls, kwargs):
    ref = old.weight_ih_l0
    # Built on the meta device, so that the throwaway initialisation neither
    # costs time nor draws from the caller's random number generator.
    new = new_cls(
        old.input_size, old.hidden_size, num_layers=old.num_layers, bias=old.bias, batch_first=old.batch_first,
        dropout=old.dropout, bidirectional=old.bidirectional, proj_size=old.proj_size, device="meta",
        dtype=ref.dtype, **kwargs,
    ).to_empty(device=ref.device)  # fmt: skip
    new.load_state_dict(old.state_dict())
    for name, param in old.named_parameters():
        getattr(new, name).requires_grad_(param.requires_grad)
    return new.train(old.training)
