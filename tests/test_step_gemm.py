"""The per-step GEMM of the CPU kernels (packed panels, AVX2 and AVX-512
register tiles) against a float64 torch.mm, over shapes that hit every tile
shape, partial panels, several depth blocks and strided weights. bfloat16
operands give a float product (exact products summed in float), on the
avx512_bf16 tiles where the CPU has them: taken here even where they do not
pay (RNNKERNELS_CPU_GEMM=bf16), so that every CPU with them tests them."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import rnnkernels
from conftest import requires_extension

pytestmark = requires_extension

C = rnnkernels._extension._C


@pytest.fixture(autouse=True)
def bf16_tiles_everywhere(monkeypatch):
    monkeypatch.setenv("RNNKERNELS_CPU_GEMM", "bf16")  # float and double tiles as without it


DTYPES = [torch.float32, torch.float64, torch.bfloat16]


def weight(K, N, layout, dtype, g):
    """A (K, N) right operand laid out as the kernels meet it."""
    if layout == "w.t()":  # w_hh.t() in the forward
        return torch.randn(N, K, generator=g, dtype=dtype).t()
    if layout == "sliced":  # one gate's rows of w_hh, or a strided view
        return torch.randn(K, 2 * N + 1, generator=g, dtype=dtype)[:, 1::2]
    return torch.randn(K, N, generator=g, dtype=dtype)


def check(M, K, N, layout, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(M, K, generator=g, dtype=dtype)
    b = weight(K, N, layout, dtype, g)
    got = C.step_matmul(a, b)
    assert got.dtype == (torch.float32 if dtype == torch.bfloat16 else dtype)
    want = (a.double() @ b.double()).to(got.dtype)
    scale = max(1.0, K**0.5)
    tol = (
        dict(rtol=1e-14 * scale, atol=1e-14 * scale)
        if dtype == torch.float64
        else dict(rtol=2e-6 * scale, atol=2e-6 * scale)
    )
    assert got.shape == (M, N)
    torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M", [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 20, 64])
def test_every_tile_shape(M, dtype):
    # 100 columns: six full float panels (twelve double) and a partial one.
    check(M, 70, 100, "contiguous", dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", [0, 1, 255, 650, 2048, 2049, 4500])
def test_depth_blocks(K, dtype):
    check(9, K, 48, "w.t()", dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tall_a_in_row_chunks(dtype):
    # Over 8 MiB of A's rows: passes over row chunks (kRowChunkBytes).
    check(1100, 4500 if dtype == torch.bfloat16 else 2048, 40, "w.t()", dtype)


@given(
    M=st.integers(1, 30),
    K=st.integers(1, 600),
    N=st.integers(1, 90),
    layout=st.sampled_from(["contiguous", "w.t()", "sliced"]),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_any_shape_and_layout(M, K, N, layout, dtype, seed):
    check(M, K, N, layout, dtype, seed)


def test_empty_products():
    assert C.step_matmul(torch.randn(0, 5), torch.randn(5, 7)).shape == (0, 7)
    assert C.step_matmul(torch.randn(4, 5), torch.randn(5, 0)).shape == (4, 0)
    assert torch.equal(C.step_matmul(torch.randn(4, 0), torch.randn(0, 7)), torch.zeros(4, 7))


def test_same_result_with_aten_gemm(monkeypatch):
    """RNNKERNELS_CPU_GEMM=aten sends the products to at::mm: same values to rounding."""
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(11, 300, generator=g), torch.randn(300, 77, generator=g)
    packed = C.step_matmul(a, b)
    monkeypatch.setenv("RNNKERNELS_CPU_GEMM", "aten")
    assert not C.panel_gemm_enabled(torch.float32)
    torch.testing.assert_close(C.step_matmul(a, b), packed, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "a, b, match",
    [
        (torch.randn(3), torch.randn(3, 4), "2-D"),
        (torch.randn(2, 3), torch.randn(4, 5), "but b is"),
        (torch.randn(2, 3), torch.randn(3, 4, dtype=torch.float64), "but b is"),
        (torch.randn(2, 3).half(), torch.randn(3, 4).half(), "float, double or bfloat16"),
    ],
)
def test_bad_arguments_raise(a, b, match):
    with pytest.raises(RuntimeError, match=match):
        C.step_matmul(a, b)


def test_bfloat16_tiles_where_the_cpu_has_them_and_they_pay(monkeypatch):
    """On a CPU with avx512_bf16 the bfloat16 products run on their own tiles
    where vdpbf16ps outruns float FMAs (AMD's); elsewhere (Intel's Xeons issue
    it at a quarter of the FMA rate, half the float FLOP rate) they run in
    float, unless
    RNNKERNELS_CPU_GEMM=bf16 asks for the tiles."""
    try:
        cpuinfo = open("/proc/cpuinfo").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    has = all(f in cpuinfo.split() for f in ("avx512f", "avx512bw", "avx512vl", "avx512_bf16"))
    assert C.panel_gemm_enabled(torch.bfloat16) == has  # RNNKERNELS_CPU_GEMM=bf16 (the fixture)
    monkeypatch.delenv("RNNKERNELS_CPU_GEMM")
    assert C.panel_gemm_enabled(torch.bfloat16) == (has and "AuthenticAMD" in cpuinfo)
    monkeypatch.setenv("RNNKERNELS_CPU_GEMM", "avx2")  # avx2 or aten turn them off
    assert not C.panel_gemm_enabled(torch.bfloat16)
