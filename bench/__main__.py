"""python -m bench: rnnkernels.LSTM beside nn.LSTM and the other peers."""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import torch
from tqdm import tqdm

from . import backends, configs, jsonout, machine, report, roofline, runner

DEFAULT_REPEATS = {"quick": 5, "standard": 7}
DEFAULT_WARMUP = {"quick": 1, "standard": 2}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--preset", choices=sorted(configs.PRESETS), default=None,
                   help="quick (default; about a minute on 2 CPU cores) or standard (the full table)")
    p.add_argument("--config", action="append", default=[], metavar="SPEC",
                   help=f"a custom config, repeatable: {configs.CONFIG_HELP}; "
                   "replaces the preset unless --preset is given")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: cuda when available")
    p.add_argument("--backends", default=",".join(backends.NAMES),
                   help=f"comma-separated subset of {','.join(backends.NAMES)}")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per backend and mode (default: by preset)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per backend and mode first")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before measuring")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    p.add_argument("--no-check", action="store_true", help="skip the agreement check against nn.LSTM")
    p.add_argument("--json", metavar="PATH", help="write every record as JSON")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of speed relative to nn.LSTM")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    unknown = [n for n in names if n not in backends.NAMES]
    if unknown:
        p.error(f"unknown backend(s) {unknown}; choose from {list(backends.NAMES)}")
    args.backends = names
    try:
        custom = [configs.parse_config(c) for c in args.config]
    except ValueError as exc:
        p.error(str(exc))
    preset = args.preset or "quick"
    args.configs = (configs.PRESETS[args.preset] if args.preset else []) + custom if custom else configs.PRESETS[preset]
    args.repeats = args.repeats if args.repeats is not None else DEFAULT_REPEATS[preset]
    args.warmup = args.warmup if args.warmup is not None else DEFAULT_WARMUP[preset]
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    return args


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch.cuda.is_available() is False")
    return torch.device(name)


def main(argv=None) -> int:
    args = parse_args(argv)
    # nn.LSTM says once that proj_size runs on the generic path; the table says it better.
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    started = time.perf_counter()
    meta = machine.describe(device)
    dtypes = list(dict.fromkeys(c.dtype for c in args.configs))
    rooflines = {d: roofline.gemm_gflops(configs.DTYPES[d], device) for d in dtypes}
    meta.update(rooflines_gflops=rooflines, roofline_gemm_n=roofline.gemm_size(device), repeats=args.repeats,
                warmup=args.warmup, backends=args.backends,
                preset=args.preset or ("custom" if args.config else "quick"))
    print(report.header(meta, rooflines))
    print(report.LEGEND)
    print(flush=True)

    records, skipped, notes = [], [], []
    progress = tqdm(args.configs, desc="bench", unit="config", leave=False, disable=not sys.stderr.isatty())
    for cfg in progress:
        progress.set_postfix_str(cfg.name)
        recs, skips, cfg_notes = runner.run_config(
            cfg, args.backends, device, args.repeats, args.warmup, rooflines,
            measure_memory=not args.no_memory, verify=not args.no_check)
        records += recs
        skipped += skips
        notes += cfg_notes
        progress.clear()
        print(report.config_table(cfg, recs, skips), flush=True)
        print()
    for n in notes:
        print("note:", n)
    meta["wall_s"] = time.perf_counter() - started
    print(f"{len(args.configs)} configs, {args.repeats} repeats, {args.warmup} warm-up, {meta['wall_s']:.0f} s")

    if args.json:
        jsonout.write(args.json, meta, records, skipped, notes)
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
