"""Builds rnnkernels._C: the CPU kernels always, the CUDA kernels when torch
has CUDA and the CUDA toolkit is installed.

RNNKERNELS_CUDA=1 forces the CUDA build (and fails if it cannot happen),
RNNKERNELS_CUDA=0 skips it. TORCH_CUDA_ARCH_LIST picks the GPU architectures.
"""

import glob
import os

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

VERSION = "0.1.0"
HERE = os.path.dirname(os.path.abspath(__file__))


def build_cuda() -> bool:
    flag = os.environ.get("RNNKERNELS_CUDA", "auto").lower()
    available = torch.version.cuda is not None and CUDA_HOME is not None
    if flag in ("1", "true", "yes"):
        if not available:
            raise RuntimeError(
                "RNNKERNELS_CUDA=1 but torch has no CUDA "
                f"(torch.version.cuda={torch.version.cuda}) or no CUDA toolkit was found (CUDA_HOME={CUDA_HOME})"
            )
        return True
    if flag in ("0", "false", "no"):
        return False
    return available


def sources(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))


def extension():
    # No -std flag: each torch release adds the standard its own headers need.
    cxx = ["-O3", "-fopenmp", f'-DRNNKERNELS_VERSION="{VERSION}"']
    srcs = sources("csrc/*.cpp") + sources("csrc/cpu/*.cpp")
    include = [os.path.join(HERE, "csrc")]
    if build_cuda():
        if "TORCH_CUDA_ARCH_LIST" not in os.environ and not torch.cuda.is_available():
            # No GPU to ask at build time: Ampere and Hopper, plus PTX for newer.
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
        srcs += sources("csrc/cuda/*.cu") + sources("csrc/cuda/*.cpp")
        return CUDAExtension(
            "rnnkernels._C",
            srcs,
            include_dirs=include,
            define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
            extra_link_args=["-fopenmp"],
        )
    return CppExtension(
        "rnnkernels._C", srcs, include_dirs=include, extra_compile_args=cxx, extra_link_args=["-fopenmp"]
    )


setup(
    name="rnnkernels",
    version=VERSION,
    description="Fused LSTM kernels for PyTorch with truncated backpropagation through time",
    packages=find_packages(include=["rnnkernels", "rnnkernels.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.10",
    install_requires=["torch>=2.11", "numpy"],
)
