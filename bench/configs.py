"""Benchmark configurations: the presets and the `--config` parser."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float64": torch.float64, "fp64": torch.float64,
          "float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
SHORT = {"float32": "f32", "float64": "f64", "float16": "f16", "bfloat16": "bf16"}


@dataclass(frozen=True)
class Config:
    name: str
    T: int
    B: int
    I: int  # noqa: E741
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
        s = f"T{self.T} B{self.B} I{self.I} H{self.H}"
        if self.layers > 1:
            s += f" L{self.layers}"
        s += f" {SHORT.get(self.dtype, self.dtype)}"
        if self.bidirectional:
            s += " bi"
        if self.proj:
            s += f" P{self.proj}"
        if self.window:
            s += f" w{self.window}"
        if self.reset:
            s += f" reset{self.reset:.0%}"
        return s

    def as_dict(self) -> dict:
        return asdict(self)


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
    # rnnkernels is measured by bench.feature_cost, interleaved in one process:
    # separate configurations here drift apart by more than that cost.
    Config("baseline", 100, 16, 256, 256),
    Config("window", 100, 16, 256, 256, window=10),
    Config("reset", 100, 16, 256, 256, reset=0.05),
]

PRESETS = {"quick": QUICK, "standard": STANDARD}

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
    T, B, I, H = (int(p) for p in parts[:4])  # noqa: E741
    fields = dict(T=T, B=B, I=I, H=H)
    conv = [("layers", int), ("dtype", str), ("bidirectional", _bool), ("proj", int), ("window", int), ("reset", float)]
    for (key, fn), value in zip(conv, parts[4:]):
        fields[key] = fn(value)
    if "dtype" in fields:
        if fields["dtype"] not in DTYPES:
            raise ValueError(f"unknown dtype {fields['dtype']!r}; one of {sorted(DTYPES)}")
        fields["dtype"] = str(DTYPES[fields["dtype"]]).removeprefix("torch.")
    cfg = Config("custom", **fields)
    if min(T, B, I, H, cfg.layers) < 1 or cfg.proj < 0 or cfg.window < 0 or not 0 <= cfg.reset <= 1:
        raise ValueError(f"bad --config {text!r}")
    if cfg.proj >= cfg.H:
        raise ValueError("proj must be smaller than H (nn.LSTM's rule)")
    return cfg
