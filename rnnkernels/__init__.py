"""rnnkernels: fused LSTM kernels for PyTorch with truncated BPTT built in."""

from . import ops, reference
from ._extension import backend_info
from .modules import LSTM, replace_lstm

__all__ = ["LSTM", "replace_lstm", "backend_info", "ops", "reference"]
__version__ = "0.1.0"
