"""What the numbers were measured on: the header of the table and the JSON."""

from __future__ import annotations

import os
import platform

import torch


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
