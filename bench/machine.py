"""What the numbers were measured on, for the header and the JSON: the machine,
and its best large-GEMM rate per dtype, measured once at the start: the roofline
LSTM GFLOP/s are compared with (an LSTM is GEMMs plus elementwise math)."""

from __future__ import annotations

import os
import platform

import torch

from .timing import interleaved


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def rnnkernels_status() -> str:
    try:
        import rnnkernels
    except ImportError as exc:
        return f"not importable ({exc})"
    info = rnnkernels.backend_info()
    built = "cpu" + ("+cuda" if info["cuda_extension"] else "") if info["cpu_extension"] else "not built"
    return f"{rnnkernels.__version__} (extension: {built})"


def describe(device: torch.device) -> dict:
    meta = {
        "torch": torch.__version__,
        "rnnkernels": rnnkernels_status(),
        "device": device.type,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
        meta["cuda"] = torch.version.cuda
        meta["cudnn"] = torch.backends.cudnn.version()
    return meta


def gemms(dtype: torch.dtype, device: torch.device) -> dict:
    """{label: (zero-argument n x n x n GEMM, its FLOPs)}: every library worth trying here.

    float16 on a CPU also tries float32: without float16 arithmetic, a float16
    product runs fastest widened, as the kernels run it and nn.LSTM would."""
    out = {}
    if device.type == "cpu" and dtype == torch.float16:
        out = {f"{k} (float32)": v for k, v in gemms(torch.float32, device).items()}
    g = torch.Generator(device=device).manual_seed(0)
    for n in (4096,) if device.type == "cuda" else (1024, 2048):
        a, b, c = (torch.randn(n, n, generator=g, device=device, dtype=dtype) for _ in range(3))
        out[f"torch.mm n={n}"] = (lambda a=a, b=b, c=c: torch.mm(a, b, out=c), 2 * n**3)
        if device.type == "cpu" and dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.is_available():
            # oneDNN with the weight packed once, as its linear layers and nn.LSTM run.
            w = torch.ops.mkldnn._reorder_linear_weight(b.t().contiguous(), n)
            out[f"oneDNN n={n}"] = (
                lambda a=a, w=w: torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], ""),
                2 * n**3,
            )
    return out


def gemm_rates(dtype: torch.dtype, device: torch.device, repeats: int = 3) -> dict:
    """{label: GFLOP/s of the best of repeats}: the roofline is a peak, and on a
    shared machine the best sample is the least disturbed."""
    calls = gemms(dtype, device)
    ms = interleaved({k: fn for k, (fn, _) in calls.items()}, device, repeats, warmup=1)
    return {k: calls[k][1] / (min(v) * 1e-3) / 1e9 for k, v in ms.items()}
