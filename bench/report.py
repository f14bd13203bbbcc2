"""The printed header and table."""

from __future__ import annotations

from .check import DEFAULT_TOLERANCE, TOLERANCE
from .configs import Config


def header(meta: dict, rooflines: dict) -> str:
    where = meta.get("gpu") or meta["cpu"]
    lines = [
        f"torch {meta['torch']} | rnnkernels {meta['rnnkernels']} | device {meta['device']} ({where}) | "
        f"threads {meta['threads']}",
        f"GEMM roofline (torch.mm, n={meta.get('roofline_gemm_n')}, best of 10 at start; each config re-times it "
        "in its own rounds): "
        + ", ".join(f"{d} {g:.1f} GFLOP/s" for d, g in rooflines.items()),
    ]
    load, cores = meta.get("load_avg_1min"), meta.get("cpu_count")
    if load is not None and cores and load > 0.5 * cores:
        lines.append(f"warning: load average {load:.1f} on {cores} CPUs before the run: other work shares this "
                     "machine and timings will be noisy (fewer --threads helps)")
    return "\n".join(lines)


LEGEND = (
    "ms = median per call; spread = IQR/median; vs nn = nn.LSTM time / this time (>1 is faster);\n"
    "roof = GFLOP/s / GEMM rate timed in the same rounds; peak = MiB allocated above the starting level\n"
    "(CPU: PyTorch's allocator, seen by torch.profiler); err = max relative difference of output and\n"
    "gradients from nn.LSTM (! above tolerance).\n"
    "torchscript / torch.compile: per-step cell loops as in PyTorch's fastrnns (torch.compile compiles the\n"
    "cell step; its compile time is excluded). nn.LSTM with window/reset: one call per segment, the state\n"
    "detached (window) or zeroed (reset) in between, as TBPTT is written without rnnkernels."
)


def _fmt(v, spec, missing="n/a"):
    return missing if v is None else format(v, spec)


def _mode_cells(r):
    if r is None:
        return ["-"] * 6
    return [
        f"{r['median_ms']:.3f}",
        f"{r['spread']:.0%}",
        _fmt(r["speedup_vs_nn_lstm"], ".2f", "-") + ("x" if r["speedup_vs_nn_lstm"] else ""),
        f"{r['gflops']:.1f}",
        _fmt(r["roofline_fraction"], ".0%"),
        _fmt(r["peak_mib"], ".1f"),
    ]


COLUMNS = ["backend", "fwd ms", "spread", "vs nn", "GFLOP/s", "roof", "peak",
           "f+b ms", "spread", "vs nn", "GFLOP/s", "roof", "peak", "err"]


def config_table(cfg: Config, records: list, skipped: list) -> str:
    by = {(r["backend"], r["mode"]): r for r in records}
    order = list(dict.fromkeys(r["backend"] for r in records))
    rows = []
    for name in order:
        fwd, fb = by.get((name, "fwd")), by.get((name, "fwd+bwd"))
        err = (fwd or fb)["max_rel_error"]
        flag = "!" if err is not None and err > TOLERANCE.get(cfg.dtype, DEFAULT_TOLERANCE) else ""
        rows.append([name] + _mode_cells(fwd) + _mode_cells(fb) + [_fmt(err, ".1e") + flag])
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(COLUMNS)]

    def line(cells):
        out = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return " ".join(out[:7]) + " | " + " ".join(out[7:13]) + " | " + out[13]

    any_rec = records[0] if records else None
    gf = ""
    if any_rec:
        fl = {r["mode"]: r["gflop"] for r in records}
        gf = f"   ({fl.get('fwd', 0):.3g} GFLOP fwd, {fl.get('fwd+bwd', 0):.3g} fwd+bwd)"
    out = [f"{cfg.name}: {cfg.shape()}{gf}"]
    if rows:
        out.append("  " + line(COLUMNS))
        out += ["  " + line(r) for r in rows]
    for s in skipped:
        out.append(f"  skipped {s['backend']}: {s['reason']}")
    return "\n".join(out)

