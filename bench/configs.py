"""Benchmark configurations, the presets, the `--config` parser and FLOP counts."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import torch

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float64": torch.float64,
    "fp64": torch.float64,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
SHORT = {"float32": "f32", "float64": "f64", "float16": "f16", "bfloat16": "bf16"}
MODES = ("inference", "fwd", "fwd+bwd")


@dataclass(frozen=True)
class Config:
    name: str
    T: int
    B: int
    I: int
    H: int
    layers: int = 1
    dtype: str = "float32"
    bidirectional: bool = False
    proj: int = 0
    window: int = 0
    reset: float = 0.0  # probability that a (t, b) step starts a new document

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def shape(self) -> str:
        parts = [
            f"T{self.T} B{self.B} I{self.I} H{self.H}",
            f"L{self.layers}" * (self.layers > 1),
            SHORT.get(self.dtype, self.dtype),
            "bi" * self.bidirectional,
            f"P{self.proj}" * bool(self.proj),
            f"w{self.window}" * bool(self.window),
            f"reset{self.reset:.0%}" * bool(self.reset),
        ]
        return " ".join(p for p in parts if p)

    def as_dict(self) -> dict:
        return asdict(self)

    def lstm_kwargs(self, device) -> dict:
        """The LSTM constructor arguments of this config, for every backend's module."""
        return dict(num_layers=self.layers, bidirectional=self.bidirectional, proj_size=self.proj, device=device,
                    dtype=self.torch_dtype)  # fmt: skip


def lstm_forward_flops(
    T: int, B: int, I: int, H: int, layers: int = 1, bidirectional: bool = False, proj: int = 0
) -> int:
    """Multiply-adds (x2) of the GEMMs of one forward pass.

    Per layer and direction: the input GEMM 2*T*B*4H*I, the recurrent GEMM
    2*T*B*4H*P (P = proj or H) and, with a projection, 2*T*B*P*H. Layers after
    the first read the previous layer's output, of width P times directions.
    Elementwise gate math is left out: it is a few percent at these sizes.
    """
    dirs, P, width, total = 2 if bidirectional else 1, proj or H, I, 0
    for _ in range(layers):
        total += dirs * (2 * T * B * 4 * H * (width + P) + (2 * T * B * P * H if proj else 0))
        width = P * dirs
    return total


def lstm_flops(cfg: Config, mode: str) -> int:
    """FLOPs of one call in `mode`; backward counts twice forward (gradients
    with respect to both the inputs and the weights)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    fwd = lstm_forward_flops(cfg.T, cfg.B, cfg.I, cfg.H, cfg.layers, cfg.bidirectional, cfg.proj)
    return 3 * fwd if mode == "fwd+bwd" else fwd


@dataclass(frozen=True)
class Preset:
    configs: list
    repeats: int
    warmup: int
    backends: tuple | None = None  # None: every backend
    left_out: tuple = ()  # (config, reason): sizes the preset does not run
    min_seconds: float = 0.5  # rounds of one mode go on at least this long (timing.interleaved)


QUICK = [
    Config("small", 35, 20, 128, 128),
    Config("streaming", 50, 1, 64, 64),
    Config("tbptt", 40, 8, 64, 64, window=10, reset=0.05),
]

STANDARD = [
    Config("ptb-small", 35, 20, 200, 200, layers=2),
    Config("ptb-medium", 35, 20, 650, 650, layers=2),
    Config("fastrnns", 100, 64, 512, 512),
    Config("streaming", 100, 1, 64, 64),
    Config("small-batch", 50, 8, 128, 128),
    Config("fp64", 35, 20, 200, 200, dtype="float64"),
    Config("bidirectional", 50, 16, 256, 256, bidirectional=True),
    Config("proj", 50, 16, 256, 512, proj=128),
    # The size of "window" and "reset" without either. What the features cost
    # rnnkernels is measured by `bench.probe features`, interleaved in one
    # process: separate configurations here drift apart by more than that cost.
    Config("baseline", 100, 16, 256, 256),
    Config("window", 100, 16, 256, 256, window=10),
    Config("reset", 100, 16, 256, 256, reset=0.05),
    Config("ptb-small-bf16", 35, 20, 200, 200, layers=2, dtype="bfloat16"),
    Config("fastrnns-bf16", 100, 64, 512, 512, dtype="bfloat16"),
]

# The grid leaves out sizes whose forward+backward takes more GFLOP than this:
# at ~100 GFLOP/s on 2 cores, every call it times stays under ~2 s.
GRID_BUDGET_GFLOP = 150


def grid() -> Preset:
    kept, left_out = [], []
    for T, B, H in itertools.product((10, 35, 100, 500), (1, 8, 32, 64), (64, 256, 512, 1024)):
        cfg = Config(f"grid-T{T}-B{B}-H{H}", T, B, H, H)
        gflop = lstm_flops(cfg, "fwd+bwd") / 1e9
        if gflop > GRID_BUDGET_GFLOP:
            left_out.append((cfg, f"{gflop:.0f} GFLOP fwd+bwd > budget {GRID_BUDGET_GFLOP}"))
        else:
            kept.append(cfg)
    return Preset(kept, repeats=3, warmup=1, backends=("rnnkernels", "nn.LSTM"), left_out=tuple(left_out))


PRESETS = {
    "quick": Preset(QUICK, repeats=5, warmup=1),
    "standard": Preset(STANDARD, repeats=7, warmup=2),
    "grid": grid(),
}

CONFIG_HELP = "T,B,I,H[,layers[,dtype[,bidirectional[,proj[,window[,reset]]]]]], e.g. 100,64,512,512,1,float32,0,0,10"


def _bool(s: str) -> bool:
    v = s.strip().lower()
    if v in ("1", "true", "yes", "bi", "y"):
        return True
    if v in ("0", "false", "no", "uni", "n", ""):
        return False
    raise ValueError(f"not a boolean: {s!r}")


def parse_config(text: str) -> Config:
    """Parse `--config`: T,B,I,H are required, the rest default to nn.LSTM's defaults."""
    parts = [p.strip() for p in text.split(",")]
    if not 4 <= len(parts) <= 10:
        raise ValueError(f"--config wants {CONFIG_HELP}; got {text!r}")
    fields = dict(zip("TBIH", (int(p) for p in parts[:4])))
    conv = [("layers", int), ("dtype", str), ("bidirectional", _bool), ("proj", int), ("window", int), ("reset", float)]
    for (key, fn), value in zip(conv, parts[4:]):
        fields[key] = fn(value)
    if "dtype" in fields:
        if fields["dtype"] not in DTYPES:
            raise ValueError(f"unknown dtype {fields['dtype']!r}; one of {sorted(DTYPES)}")
        fields["dtype"] = str(DTYPES[fields["dtype"]]).removeprefix("torch.")
    cfg = Config("custom", **fields)
    if min(cfg.T, cfg.B, cfg.I, cfg.H, cfg.layers) < 1 or cfg.proj < 0 or cfg.window < 0 or not 0 <= cfg.reset <= 1:
        raise ValueError(f"bad --config {text!r}")
    if cfg.proj >= cfg.H:
        raise ValueError("proj must be smaller than H (nn.LSTM's rule)")
    return cfg
