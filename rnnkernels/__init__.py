"""rnnkernels: fused LSTM kernels for PyTorch with truncated BPTT built in."""

from . import ops, reference
from ._extension import backend_info
from .convert import replace_lstm, to_nn_lstm
from .modules import LSTM
from .tbptt import TBPTT, Window, batchify, bptt_batches, detach_state, resize_state

__all__ = [
    "LSTM",
    "replace_lstm",
    "to_nn_lstm",
    "backend_info",
    "ops",
    "reference",
    "TBPTT",
    "Window",
    "batchify",
    "bptt_batches",
    "detach_state",
    "resize_state",
]
__version__ = "0.1.0"
