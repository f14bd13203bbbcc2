"""The benchmark: FLOP counting, configs and presets, peer semantics, modes, and smoke runs."""

import json
import os
import pathlib
import sys

import pytest
import torch

# bench/ is not installed (setup.py packages rnnkernels only): import it from the checkout.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench import __main__ as bench_main  # noqa: E402
from bench import backends, configs, loops, probe, runner, timing  # noqa: E402
from bench.configs import lstm_flops, lstm_forward_flops  # noqa: E402
from conftest import num_threads  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CPU = torch.device("cpu")


def test_forward_flops_single_layer():
    # 2*T*B*4H*(I+H): input GEMM plus recurrent GEMM.
    assert lstm_forward_flops(35, 20, 200, 200) == 2 * 35 * 20 * 4 * 200 * (200 + 200)
    assert lstm_forward_flops(2, 3, 5, 7) == 2 * 2 * 3 * 28 * 12


def test_forward_flops_layers_directions_proj():
    T, B, I, H, P = 10, 4, 16, 32, 8
    # Layer 0: input GEMM on I, recurrent on P, projection P x H; both directions.
    l0 = 2 * (2 * T * B * 4 * H * (I + P) + 2 * T * B * P * H)
    # Layer 1 reads both directions' projected outputs: width 2P.
    l1 = 2 * (2 * T * B * 4 * H * (2 * P + P) + 2 * T * B * P * H)
    assert lstm_forward_flops(T, B, I, H, layers=2, bidirectional=True, proj=P) == l0 + l1


def test_flops_per_mode():
    cfg = configs.Config("x", 7, 3, 5, 11, layers=2)
    fwd = lstm_forward_flops(7, 3, 5, 11, layers=2)
    assert [lstm_flops(cfg, m) for m in configs.MODES] == [fwd, fwd, 3 * fwd]  # inference counts as forward
    with pytest.raises(ValueError):
        lstm_flops(cfg, "bwd")


def test_parse_config():
    cfg = configs.parse_config("100,64,512,256,2,fp64,1,128,10,0.05")
    assert (cfg.T, cfg.B, cfg.I, cfg.H, cfg.layers) == (100, 64, 512, 256, 2)
    assert cfg.dtype == "float64" and cfg.bidirectional and cfg.proj == 128 and cfg.window == 10
    assert cfg.reset == 0.05
    assert configs.parse_config("5,2,3,4") == configs.Config("custom", 5, 2, 3, 4)
    assert configs.parse_config("5,2,3,4,1,bf16").dtype == "bfloat16"
    for bad in ("1,2,3", "1,2,3,4,1,float8", "1,2,3,4,1,float32,0,4", "0,2,3,4"):
        with pytest.raises(ValueError):
            configs.parse_config(bad)


def test_presets():
    for name, preset in configs.PRESETS.items():
        assert len({c.name for c in preset.configs}) == len(preset.configs), name  # names key plot and JSON
    assert {"bfloat16", "float64"} <= {c.dtype for c in configs.PRESETS["standard"].configs}
    grid = configs.PRESETS["grid"]
    assert grid.backends == ("rnnkernels", "nn.LSTM") and grid.repeats <= 3 and grid.warmup == 1
    assert len(grid.configs) + len(grid.left_out) == 4 * 4 * 4
    budget = configs.GRID_BUDGET_GFLOP * 1e9
    assert all(lstm_flops(c, "fwd+bwd") <= budget and c.I == c.H and c.layers == 1 for c in grid.configs)
    assert grid.left_out and all(lstm_flops(c, "fwd+bwd") > budget for c, _ in grid.left_out)
    assert "grid-T500-B64-H1024" in [c.name for c, _ in grid.left_out]


def test_parse_args_defaults_and_choices():
    args = bench_main.parse_args(["--preset", "grid", "--device", "cpu"])
    assert args.backends == ["rnnkernels", "nn.LSTM"] and args.repeats == 3 and args.warmup == 1
    assert args.modes == list(configs.MODES) and args.tf32 == "off" and args.left_out
    args = bench_main.parse_args(
        [
            "--config",
            "5,2,3,4",
            "--config",
            "5,2,3,4,1,bf16",
            "--modes",
            "fwd,inference",
            "--tf32",
            "on",
            "--device",
            "cpu",
        ]
    )
    assert [c.name for c in args.configs] == ["custom-1", "custom-2"] and args.backends == list(backends.NAMES)
    assert args.modes == ["fwd", "inference"] and args.tf32 == "on" and not args.left_out
    for bad in (["--modes", "bwd"], ["--backends", "nope"], ["--tf32", "maybe"]):
        with pytest.raises(SystemExit):
            bench_main.parse_args(bad)


def test_interleaved_rounds_and_summary():
    def run():
        calls = []
        fns = {n: (lambda n=n: calls.append(n)) for n in "abc"}
        samples = timing.interleaved(fns, CPU, repeats=30, warmup=1)
        return calls, samples

    calls, samples = run()
    rounds = ["".join(calls[i : i + 3]) for i in range(3, len(calls), 3)]
    assert calls[:3] == list("abc") and len(rounds) == 30  # warm-up, then a round each
    assert all(sorted(r) == list("abc") for r in rounds)  # each backend once a round
    # Each backend runs after each of the others in some round (not in one
    # fixed cyclic order), and the orders are the same from run to run.
    assert {r[i - 1] + r[i] for r in rounds for i in (1, 2)} == {"ab", "ba", "ac", "ca", "bc", "cb"}
    assert run()[0] == calls
    assert all(len(v) == 30 for v in samples.values())
    assert timing.summarize([1.0, 2.0, 3.0, 4.0, 100.0]) == (3.0, pytest.approx((4.0 - 2.0) / 3.0))
    # The ratio is taken round by round: a round that ran slow for both cancels.
    assert timing.median_ratio([2.0, 20.0, 4.0], [1.0, 10.0, 1.0]) == 2.0


def test_short_calls_are_timed_in_runs_until_the_time_budget():
    calls = []
    fns = {"fast": lambda: calls.append(1)}
    samples = timing.interleaved(fns, CPU, repeats=2, warmup=0, min_seconds=0.05, sample_ms=1.0)
    runs = (len(calls) - 2) / len(samples["fast"])  # two calibration calls, then equal runs
    assert runs > 10 and runs == int(runs)
    assert len(samples["fast"]) > 2  # rounds go on past `repeats` to fill min_seconds


def test_chunk_starts():
    reset = torch.zeros(10, 2, dtype=torch.bool)
    reset[0, 0] = reset[3, 1] = reset[4, 0] = True  # t=0 needs no chunk: the state starts at zero
    assert backends.chunk_starts(10, 4, None) == [4, 8]
    assert backends.chunk_starts(10, 0, reset) == [3, 4]
    assert backends.chunk_starts(10, 4, reset) == [3, 4, 8]


SEMANTICS = [
    configs.Config("uni", 9, 3, 4, 5, layers=2, window=3, reset=0.2),
    configs.Config("bi", 9, 3, 4, 5, layers=2, bidirectional=True, proj=3, window=4, reset=0.2),
]


@pytest.mark.parametrize("cfg", SEMANTICS, ids=lambda c: c.name)
def test_peers_match_reference(cfg):
    """The per-step loops and chunked nn.LSTM follow rnnkernels' window/reset
    semantics, so their times compare like with like."""
    cfg = configs.Config(**{**cfg.as_dict(), "dtype": "float64"})
    base, x, reset = runner.make_inputs(cfg, CPU)
    ref = runner.outputs_and_grads(backends.build("reference", cfg, base, CPU), x, reset)
    names = ["torchscript", "nn.LSTM", "nn.LSTM-generic"]
    if cfg.bidirectional:
        names = names[:1]  # chunked nn.LSTM skips bidirectional with window/reset
    for name in names:
        got = runner.outputs_and_grads(backends.build(name, cfg, base, CPU), x, reset)
        assert runner.max_rel_error(got, ref) < 1e-10, name
    # The Python loop torch.compile drives, with an eager cell.
    params, weights = backends._loop_weights(cfg, base)
    eager = backends.Runner(
        lambda x, r: loops.run_stack(lambda *a: loops.python_loop(loops.lstm_cell, *a), weights(), x, cfg, r), params
    )
    assert runner.max_rel_error(runner.outputs_and_grads(eager, x, reset), ref) < 1e-10


def test_skip_reasons():
    cfg = configs.Config("bi", 5, 2, 3, 4, bidirectional=True, window=2)
    base, _, _ = runner.make_inputs(cfg, CPU)
    with pytest.raises(backends.Skip, match="bidirectional"):
        backends.build("nn.LSTM", cfg, base, CPU)
    cfg = configs.Config("f32", 5, 2, 3, 4)
    with pytest.raises(backends.Skip, match="float32"):
        backends.build("nn.LSTM-float32", cfg, runner.make_inputs(cfg, CPU)[0], CPU)


def test_modes_switch_the_module():
    """inference runs eval() under no_grad; fwd and fwd+bwd run train() with grad."""
    cfg = configs.Config("m", 4, 2, 3, 5)
    base, x, _ = runner.make_inputs(cfg, CPU)
    r = backends.build("nn.LSTM", cfg, base, CPU)
    seen = []
    forward = r.forward
    r.forward = lambda x, reset: seen.append((r.module.training, torch.is_grad_enabled())) or forward(x, reset)
    for mode in configs.MODES:
        runner.mode_call(r, x, None, mode)()
    assert seen == [(False, False), (True, True), (True, True)]


def test_float32_peer_on_bfloat16():
    cfg = configs.Config("bf16", 4, 2, 3, 5, dtype="bfloat16")
    base, x, _ = runner.make_inputs(cfg, CPU)
    r = backends.build("nn.LSTM-float32", cfg, base, CPU)
    assert all(p.dtype == torch.float32 for p in r.params)
    got = runner.outputs_and_grads(r, x, None)
    assert got[0].dtype == got[1].dtype == torch.bfloat16  # output and input gradient back in the config's dtype
    ref = runner.outputs_and_grads(backends.build("nn.LSTM", cfg, base, CPU), x, None)
    assert runner.max_rel_error(got, ref) < runner.DEFAULT_TOLERANCE


RECORD_KEYS = {
    "config",
    "backend",
    "mode",
    "median_ms",
    "spread",
    "gflops",
    "roofline_fraction",
    "device",
    "torch",
    "threads",
    "speedup_vs_nn_lstm",
    "peak_mib",
    "max_rel_error",
    "samples_ms",
    "min_ms",
    "roofline_gflops",
}


def test_run_end_to_end(tmp_path, capsys):
    """Every mode on a float32 and a bfloat16 config; a backend that cannot run
    bfloat16 is reported and the run goes on. torch.compile is left to the
    standard runs: compiling takes most of this file's time budget."""
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    names = [n for n in backends.NAMES if n != "torch.compile"]
    # One thread: a shared, busy CI machine stalls multi-threaded runs badly.
    # (--threads sets it for the process; num_threads puts it back.)
    with num_threads(1):
        rc = bench_main.main(
            [
                "--config",
                "6,2,3,4",
                "--config",
                "5,2,3,4,1,bf16",
                "--device",
                "cpu",
                "--backends",
                ",".join(names),
                "--repeats",
                "1",
                "--warmup",
                "0",
                "--min-seconds",
                "0",
                "--threads",
                "1",
                "--json",
                str(out_json),
                "--plot",
                str(out_png),
            ]
        )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "GEMM roofline float32" in printed and "GEMM roofline bfloat16" in printed and "tf32 off" in printed

    doc = json.loads(out_json.read_text())
    meta = doc["meta"]
    assert meta["device"] == "cpu" and meta["torch"] == torch.__version__ and meta["tf32"] == "off"
    for dtype in ("float32", "bfloat16"):
        assert meta["rooflines_gflops"][dtype] == max(meta["gemm_rates_gflops"][dtype].values()) > 0
    assert {"torch.mm n=1024", "torch.mm n=2048"} <= set(meta["gemm_rates_gflops"]["float32"])
    ran = {(r["config"]["name"], r["backend"]) for r in doc["records"]}
    skipped = {(s["config"], s["backend"]): s["reason"] for s in doc["skipped"]}
    assert all(skipped.values())
    # custom-1 is float32, custom-2 bfloat16: the float32 peer runs on the second only.
    assert ("custom-1", "nn.LSTM-float32") in skipped and ("custom-2", "nn.LSTM-float32") in ran
    for key in ((c, n) for c in ("custom-1", "custom-2") for n in names):  # each ran, or says why not
        assert key in ran or key in skipped, key
    for r in doc["records"]:
        assert RECORD_KEYS <= set(r), set(RECORD_KEYS) - set(r)
        assert r["median_ms"] > 0 and r["spread"] >= 0 and r["gflops"] > 0 and r["roofline_fraction"] > 0
        assert r["device"] == "cpu" and r["threads"] >= 1 and len(r["samples_ms"]) == 1
        assert r["max_rel_error"] < runner.TOLERANCE.get(r["config"]["dtype"], 0.1), r  # bf16: loose, tiny sizes
        if r["backend"] == "nn.LSTM":
            assert r["speedup_vs_nn_lstm"] == pytest.approx(1.0)
    by_backend = {}
    for r in doc["records"]:
        by_backend.setdefault((r["config"]["name"], r["backend"]), []).append(r["mode"])
    assert all(modes == list(configs.MODES) for modes in by_backend.values())
    assert out_png.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    "argv",
    [
        ["breakdown", "--config", "4,3,5,20"],
        ["gemm", "--config", "4,3,20"],
        ["features", "--config", "6,3,5,8", "--window", "2"],
        ["packed", "--config", "9,4,3,5", "--short", "2"],
        ["overhead", "--config", "1,1,3,4"],
        ["frozen", "--config", "4,3,5,8"],
        ["ways", "--config", "4,3,5,8", "--bidirectional", "--proj", "3"],
    ],
    ids=lambda a: a[0],
)
def test_probe_runs(argv, capsys):
    environ = dict(os.environ)
    with num_threads(1):
        probe.main(argv + ["--repeats", "2"])
    out = capsys.readouterr().out
    assert "threads" in out and len(out.splitlines()) >= 3
    assert dict(os.environ) == environ  # the ways' switches are put back


def test_torch_compile_peer():
    cfg = configs.Config("c", 4, 2, 3, 5)
    base, x, reset = runner.make_inputs(cfg, CPU)
    problem = backends.compiler_problem(CPU)
    if problem:
        pytest.skip(problem)
    with num_threads(1):
        got = runner.outputs_and_grads(backends.build("torch.compile", cfg, base, CPU), x, reset)
    ref = runner.outputs_and_grads(backends.build("nn.LSTM", cfg, base, CPU), x, reset)
    assert runner.max_rel_error(got, ref) < runner.TOLERANCE["float32"]
