"""python -m bench: rnnkernels.LSTM beside nn.LSTM and the other peers."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings

import torch
from tqdm import tqdm

from . import backends, configs, machine, report, runner, timing


def _names(text: str, allowed, what: str, p) -> list:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        p.error(f"unknown or no {what} {unknown}; choose from {list(allowed)}")
    return names


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--preset",
        choices=list(configs.PRESETS),
        default=None,
        help="quick (default; about a minute on 2 CPU cores), standard (the full table) or grid "
        f"(T x B x H sweep, one layer, up to {configs.GRID_BUDGET_GFLOP} GFLOP fwd+bwd)",
    )
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="SPEC",
        help=f"a custom config, repeatable: {configs.CONFIG_HELP}; replaces the preset unless --preset is given",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: cuda when available")
    p.add_argument(
        "--backends",
        default=None,
        help=f"comma-separated subset of {','.join(backends.NAMES)} (default: the preset's; all but grid's)",
    )
    p.add_argument("--modes", default=",".join(configs.MODES), help="comma-separated subset of %(default)s")
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed rounds per mode, at least; a round times each backend once (default: by preset)",
    )
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per backend and mode first")
    p.add_argument(
        "--min-seconds",
        type=float,
        default=None,
        help="more rounds than --repeats until a mode's rounds have run this long (default: by preset)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before measuring")
    p.add_argument(
        "--tf32",
        choices=["on", "off"],
        default="off",
        help="CUDA: allow TF32 in matmuls and cuDNN (default off: float32 is float32 on both sides)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    p.add_argument("--no-check", action="store_true", help="skip the agreement check against nn.LSTM")
    p.add_argument("--json", metavar="PATH", help="write every record as JSON")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of speed relative to nn.LSTM")
    args = p.parse_args(argv)
    try:
        custom = [configs.parse_config(c) for c in args.config]
    except ValueError as exc:
        p.error(str(exc))
    if len(custom) > 1:  # names key the plot and the JSON
        custom = [dataclasses.replace(c, name=f"custom-{k + 1}") for k, c in enumerate(custom)]
    preset = configs.PRESETS[args.preset or "quick"]
    with_preset = bool(args.preset or not custom)
    args.configs = (preset.configs if with_preset else []) + custom
    args.left_out = preset.left_out if with_preset else ()
    args.backends = _names(args.backends or ",".join(preset.backends or backends.NAMES), backends.NAMES, "backends", p)
    args.modes = _names(args.modes, configs.MODES, "modes", p)
    args.repeats = preset.repeats if args.repeats is None else args.repeats
    args.warmup = preset.warmup if args.warmup is None else args.warmup
    args.min_seconds = preset.min_seconds if args.min_seconds is None else args.min_seconds
    if args.repeats < 1 or args.warmup < 0 or args.min_seconds < 0:
        p.error("--repeats must be >= 1, --warmup and --min-seconds >= 0")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch.cuda.is_available() is False")
    args.device = torch.device(args.device)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # nn.LSTM says once that proj_size runs on the generic path; the table says it better.
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
    if args.threads:
        torch.set_num_threads(args.threads)
    # GPU comparisons state their float32 precision, and both sides run at it
    # (the flags mean nothing on the CPU, where a test session may have frozen them).
    if args.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32 == "on"
    started = time.perf_counter()
    meta = machine.describe(args.device)
    dtypes = dict.fromkeys(c.dtype for c in args.configs)
    rates = {d: machine.gemm_rates(configs.DTYPES[d], args.device) for d in dtypes}
    rooflines = {d: max(r.values()) for d, r in rates.items()}
    meta.update(
        gemm_rates_gflops=rates,
        rooflines_gflops=rooflines,
        tf32=args.tf32,
        modes=args.modes,
        repeats=args.repeats,
        warmup=args.warmup,
        min_seconds=args.min_seconds,
        sample_ms=timing.SAMPLE_MS,
        backends=args.backends,
        preset=args.preset or ("custom" if args.config else "quick"),
    )
    print(report.header(meta), report.LEGEND, "", sep="\n", flush=True)

    records, notes = [], []
    skipped = [{"config": c.name, "backend": "*", "reason": f"left out: {why}"} for c, why in args.left_out]
    for s in skipped:
        print(f"{s['config']}: {s['reason']}")
    progress = tqdm(args.configs, desc="bench", unit="config", leave=False, disable=not sys.stderr.isatty())
    for cfg in progress:
        progress.set_postfix_str(cfg.name)
        recs, skips, cfg_notes = runner.run_config(cfg, args, rooflines)
        records += recs
        skipped += skips
        notes += cfg_notes
        progress.clear()
        print(report.config_table(cfg, recs, skips) + "\n", flush=True)
    for n in notes:
        print("note:", n)
    meta["wall_s"] = time.perf_counter() - started
    print(
        f"{len(args.configs)} configs ({len(args.left_out)} left out), {args.repeats}+ rounds "
        f"(>= {args.min_seconds} s a mode), {args.warmup} warm-up, {meta['wall_s']:.0f} s"
    )

    if args.json:
        report.write_json(args.json, meta, records, skipped, notes)
        print(f"wrote {args.json}")
    if args.plot:
        if records:
            from . import plot  # matplotlib only when asked for

            plot.write(args.plot, meta, records)
            print(f"wrote {args.plot}")
        else:
            print("no records: no plot written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
