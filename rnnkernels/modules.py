"""rnnkernels.LSTM: a drop-in replacement for torch.nn.LSTM on the fused op."""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd import forward_ad
from torch.nn.utils.rnn import PackedSequence

from . import _extension, reference

BACKENDS = ("auto", "fused", "reference")


def check_window(window) -> int:
    if isinstance(window, bool) or not isinstance(window, int) or not 0 <= window < 2**63:
        raise ValueError(f"window must be a non-negative int below 2**63 (0 turns truncation off), got {window!r}")
    return window


def check_backend(backend) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "fused" and not _extension.cpu_extension():
        raise RuntimeError(
            f"rnnkernels: backend='fused' needs the compiled extension, which did not load: {_extension.LOAD_ERROR}"
        )
    return backend


class LSTM(nn.RNNBase):
    r"""Applies a multi-layer LSTM exactly like :class:`torch.nn.LSTM`, on fused kernels.

    Constructor arguments, parameter names, shapes and initialisation are those
    of ``nn.LSTM`` (``load_state_dict`` works both ways), plus keyword-only:

    * ``backend``: ``"auto"`` (fused when the extension is built, else the
      reference with one warning), ``"fused"`` or ``"reference"``.
    * ``window``: default TBPTT window for :meth:`forward` (0 = no truncation).

    ``forward(input, hx=None, *, window=None, reset=None)`` returns
    ``(output, (h_n, c_n))`` as ``nn.LSTM`` does. ``window=k`` keeps the forward
    values and stops gradients crossing the recurrent state every k steps;
    ``reset`` is a bool mask shaped like ``input`` without its feature
    dimension ((T, B), or (B, T) with ``batch_first``) that zeroes a sample's
    state before the steps where it is set.

    It subclasses ``nn.RNNBase`` rather than ``nn.LSTM`` because
    ``torch.compile`` refuses every ``nn.LSTM`` instance.
    """

    # nn.LSTM's own checks, so that errors read exactly as nn.LSTM's do.
    get_expected_cell_size = nn.LSTM.get_expected_cell_size
    check_forward_args = nn.LSTM.check_forward_args
    permute_hidden = nn.LSTM.permute_hidden

    def __init__(self, *args, backend: str = "auto", window: int = 0, **kwargs):
        super().__init__("LSTM", *args, **kwargs)
        self.backend = check_backend(backend)
        self.window = check_window(window)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        if self.window:
            s += f", window={self.window}"
        return s

    def _stack_fn(self, device: torch.device, tensors):
        """The op that runs the whole stack here on `tensors` (its inputs, state
        and weights): the fused one, or the reference with the same arguments."""
        if self.backend == "reference":
            return reference.lstm
        missing = _extension.missing_kernels(device)
        if missing is None:
            return reference.lstm if _transformed(tensors) else torch.ops.rnnkernels.lstm
        if self.backend == "fused":
            raise RuntimeError(f"rnnkernels: backend='fused' cannot run here: {missing}")
        _extension.warn_fallback_once(missing)
        return reference.lstm

    def forward(self, input, hx=None, *, window=None, reset=None):
        window = self.window if window is None else check_window(window)
        if isinstance(input, PackedSequence):
            x, batch_sizes, sorted_indices, unsorted_indices = input
            is_batched = True
            if hx is not None:
                # The state is checked in the sorted batch order the kernels use.
                hx = self.permute_hidden(hx, sorted_indices)
                self.check_forward_args(x, hx, batch_sizes)
            else:
                self.check_input(x, batch_sizes)
            T, B = len(batch_sizes), int(batch_sizes[0])
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
            batch_sizes = sorted_indices = unsorted_indices = None
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            x = input if is_batched else input.unsqueeze(batch_dim)
            if hx is None:
                self.check_input(x, None)
            else:
                want = 3 if is_batched else 2
                if hx[0].dim() != want or hx[1].dim() != want:
                    kind = "batched 3-D" if is_batched else "unbatched 2-D"
                    dims = f"({hx[0].dim()}-D, {hx[1].dim()}-D)"
                    raise RuntimeError(f"For {kind} input, hx and cx should also be {want}-D but got {dims} tensors")
                if not is_batched:
                    hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
                self.check_forward_args(x, hx, None)
            if self.batch_first:
                x = x.transpose(0, 1)
            T, B = x.shape[:2]
        # Read afresh, as nn.LSTM does, so weights swapped in (torch.func) count.
        weights = [getattr(self, n) for n in self._flat_weights_names]
        self._check_devices(x, hx, weights)
        if T == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        reset = self._time_major_reset(reset, T, B, x.device, is_batched, sorted_indices)
        h, c = (None, None) if hx is None else hx
        run_dtype = _autocast_dtype(x)
        if run_dtype is not None:
            cast = lambda t: None if t is None else t.to(run_dtype)  # noqa: E731
            x, h, c, weights = cast(x), cast(h), cast(c), [cast(w) for w in weights]
        output, h_n, c_n = self._stack_fn(x.device, (x, h, c, *weights))(
            x, h, c, weights, batch_sizes, reset, self.bias, self.num_layers, self.bidirectional,
            float(self.dropout), self.training, window,
        )  # fmt: skip

        if batch_sizes is not None:
            output = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            return output, self.permute_hidden((h_n, c_n), unsorted_indices)
        if self.batch_first:
            output = output.transpose(0, 1)
        if not is_batched:
            return output.squeeze(batch_dim), (h_n.squeeze(1), c_n.squeeze(1))
        return output, (h_n, c_n)

    def _check_devices(self, x, hx, weights):
        """nn.LSTM's device checks, with its messages and in its order."""
        if hx is not None:
            if len(hx) != 2:
                raise RuntimeError("lstm expects two hidden states")
            for h in hx:
                if h.device != x.device:
                    raise RuntimeError(
                        "Input and hidden tensors are not at the same device, "
                        f"found input tensor at {x.device} and hidden tensor at {h.device}"
                    )
        for w in weights:
            if w.device != x.device:
                raise RuntimeError(
                    "Input and parameter tensors are not at the same device, "
                    f"found input tensor at {x.device} and parameter tensor at {w.device}"
                )

    def _time_major_reset(self, reset, T, B, device, is_batched, sorted_indices):
        """The reset mask as (T, B) bool in the batch order the kernels see.

        Users give it in the input's layout: (T, B), or (B, T) with batch_first
        (packed input included), or (T,) for unbatched input."""
        if reset is None:
            return None
        if reset.dtype != torch.bool:
            raise TypeError(f"reset must be a bool tensor, got {reset.dtype}")
        if not is_batched:
            layout, expected = "(T,)", (T,)
        elif self.batch_first:
            layout, expected = "(B, T)", (B, T)
        else:
            layout, expected = "(T, B)", (T, B)
        if tuple(reset.shape) != expected:
            raise RuntimeError(f"reset must have shape {layout} matching the input, got {list(reset.shape)}")
        if not is_batched:
            reset = reset.unsqueeze(1)
        elif self.batch_first:
            reset = reset.transpose(0, 1)
        if sorted_indices is not None:
            reset = reset.index_select(1, sorted_indices.to(reset.device))
        return reset.to(device).contiguous()


def _transformed(tensors) -> bool:
    """Whether a torch.func transform (grad, vjp, jacrev, jacfwd, jvp, hessian,
    vmap) is running, or a forward-mode AD tangent rides on one of `tensors`.
    The fused op's derivative is a backward in C++, which those cannot use, so
    such a call runs on the reference, whose ATen ops they can. A trace for
    torch.compile or torch.export keeps the fused op."""
    if torch.compiler.is_compiling():
        return False
    if torch._C._are_functorch_transforms_active():
        return True
    return forward_ad._current_level >= 0 and any(
        t is not None and forward_ad.unpack_dual(t).tangent is not None for t in tensors
    )


def _autocast_dtype(x):
    """The dtype to run in under autocast: the autocast dtype, as nn.LSTM does."""
    device = x.device.type
    if device not in ("cpu", "cuda") or not torch.is_autocast_enabled(device):
        return None
    return torch.get_autocast_dtype(device)
