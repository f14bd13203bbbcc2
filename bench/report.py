"""What a run shows: the printed header and tables, and the `--json` file."""

from __future__ import annotations

import json
import os

from .configs import Config, lstm_flops
from .runner import DEFAULT_TOLERANCE, TOLERANCE

SCHEMA_VERSION = 2  # 2: modes inference / fwd / fwd+bwd; rooflines measured once, per library


def header(meta: dict) -> str:
    where = meta.get("gpu") or meta["cpu"]
    lines = [
        f"torch {meta['torch']} | rnnkernels {meta['rnnkernels']} | device {meta['device']} ({where}) | "
        f"threads {meta['threads']} | tf32 {meta['tf32']}"
    ]
    for dtype, rates in meta["gemm_rates_gflops"].items():
        lines.append(
            f"GEMM roofline {dtype}: {meta['rooflines_gflops'][dtype]:.1f} GFLOP/s, the best of "
            + ", ".join(f"{k} {v:.1f}" for k, v in rates.items())
        )
    load, cores = meta.get("load_avg_1min"), meta.get("cpu_count")
    if load is not None and cores and load > 0.5 * cores:
        lines.append(
            f"warning: load average {load:.1f} on {cores} CPUs before the run: other work shares this "
            "machine and timings will be noisy (fewer --threads helps)"
        )
    return "\n".join(lines)


LEGEND = """\
modes: inference = eval() under no_grad (nn.LSTM's oneDNN inference primitive); fwd = train() forward with
grad enabled; fwd+bwd = train() forward and autograd.grad.
ms = median per call over rounds (a round times each backend once; calls under 2 ms are timed in runs of
back-to-back calls); spread = IQR/median; vs nn = median over rounds of nn.LSTM time / this time (>1 is faster);
roof = GFLOP/s / the GEMM roofline of the config's dtype; peak = MiB allocated above the starting level
(CPU: PyTorch's allocator, seen by torch.profiler); err = max relative difference of output and gradients
from nn.LSTM (bfloat16/float16: from nn.LSTM-float32; ! above tolerance).
nn.LSTM-float32: nn.LSTM on a float32 copy, for configs in other dtypes. torchscript / torch.compile:
per-step cell loops as in PyTorch's fastrnns (compile time excluded). nn.LSTM with window/reset: one call
per segment, the state detached (window) or zeroed (reset) in between, as TBPTT is written without it."""
COLUMNS = ["mode", "backend", "ms", "spread", "vs nn", "GFLOP/s", "roof", "peak"]


def _fmt(v, spec, missing="n/a"):
    return missing if v is None else format(v, spec)


def _row(r: dict, first_of_mode: bool) -> list:
    vs = r["speedup_vs_nn_lstm"]
    return [
        r["mode"] if first_of_mode else "",
        r["backend"],
        f"{r['median_ms']:.3f}",
        f"{r['spread']:.0%}",
        _fmt(vs, ".2f", "-") + ("x" if vs else ""),
        f"{r['gflops']:.1f}",
        _fmt(r["roofline_fraction"], ".0%"),
        _fmt(r["peak_mib"], ".1f"),
    ]


def config_table(cfg: Config, records: list, skipped: list) -> str:
    gflop = {mode: lstm_flops(cfg, mode) / 1e9 for mode in ("fwd", "fwd+bwd")}
    out = [f"{cfg.name}: {cfg.shape()}   ({gflop['fwd']:.3g} GFLOP forward, {gflop['fwd+bwd']:.3g} fwd+bwd)"]
    rows = [_row(r, k == 0 or records[k - 1]["mode"] != r["mode"]) for k, r in enumerate(records)]
    if rows:
        widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(COLUMNS)]
        for cells in [COLUMNS] + rows:
            out.append(
                "  " + " ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
            )
        limit = TOLERANCE.get(cfg.dtype, DEFAULT_TOLERANCE)
        errors = {r["backend"]: r["max_rel_error"] for r in records}
        out.append(
            "  err: "
            + ", ".join(
                f"{n} {_fmt(e, '.1e')}" + ("!" if e is not None and e > limit else "") for n, e in errors.items()
            )
        )
    out += [f"  skipped {s['backend']}: {s['reason']}" for s in skipped]
    return "\n".join(out)


def write_json(path: str, meta: dict, records: list, skipped: list, notes: list) -> None:
    doc = {
        "schema": SCHEMA_VERSION,
        "meta": meta,
        # device, torch and threads are repeated on each record so that one
        # record read alone still says where it came from.
        "records": [
            {**r, "device": meta["device"], "torch": meta["torch"], "threads": meta["threads"]} for r in records
        ],
        "skipped": skipped,
        "notes": notes,
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
