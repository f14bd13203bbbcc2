"""Loads the compiled extension, remembering why when it cannot."""

from __future__ import annotations

import warnings

try:
    from . import _C  # registers torch.ops.rnnkernels.*
except (ImportError, OSError) as exc:  # not built, or built against another torch
    _C = None
    LOAD_ERROR: str | None = f"{type(exc).__name__}: {exc}"
else:
    LOAD_ERROR = None

_warned = False


def cpu_extension() -> bool:
    return _C is not None


def cuda_extension() -> bool:
    return _C is not None and bool(_C.with_cuda)


def missing_kernels(device) -> str | None:
    """Why the fused kernels cannot run on `device`, or None when they can."""
    if _C is None:
        return f"the compiled extension is not available ({LOAD_ERROR})"
    if device.type == "cuda" and not cuda_extension():
        return "the extension was built without CUDA kernels (rebuild where torch has CUDA and nvcc is installed)"
    if device.type not in ("cpu", "cuda", "meta"):  # meta runs the fake kernels
        return f"there are no fused kernels for {device.type} tensors"
    return None


def warn_fallback_once(reason: str) -> None:
    """One warning per process when "auto" has to fall back to the reference."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"rnnkernels: {reason}; falling back to the pure-PyTorch reference implementation, "
            "which is much slower. Rebuild with `pip install --no-build-isolation -e .`.",
            RuntimeWarning,
            stacklevel=3,
        )


def backend_info() -> dict:
    """What was built and can run here; `reason` says why something is missing."""
    import torch

    info = {
        "cpu_extension": cpu_extension(),
        "cuda_extension": cuda_extension(),
        "cuda_available": torch.cuda.is_available(),
        "version": _C.version if _C is not None else None,
        "built_with_torch": _C.torch_version if _C is not None else None,
        "torch": torch.__version__,
        "reason": None,
    }
    if _C is None:
        info["reason"] = LOAD_ERROR
    elif not info["cuda_extension"]:
        info["reason"] = "built without CUDA (torch has no CUDA or no CUDA toolkit was found at build time)"
    return info
