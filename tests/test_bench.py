"""The benchmark: FLOP counting, config parsing, peer semantics, and a smoke run."""

import json
import pathlib
import sys

import pytest
import torch

# bench/ is not installed (setup.py packages rnnkernels only): import it from the checkout.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench import __main__ as bench_main  # noqa: E402
from bench import backends, check, configs, loops, runner, timing  # noqa: E402
from bench.flops import lstm_flops, lstm_forward_flops  # noqa: E402
from conftest import num_threads  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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


def test_backward_counts_twice_forward():
    cfg = configs.Config("x", 7, 3, 5, 11, layers=2)
    assert lstm_flops(cfg, "fwd") == lstm_forward_flops(7, 3, 5, 11, layers=2)
    assert lstm_flops(cfg, "fwd+bwd") == 3 * lstm_flops(cfg, "fwd")
    with pytest.raises(ValueError):
        lstm_flops(cfg, "bwd")


def test_parse_config():
    cfg = configs.parse_config("100,64,512,256,2,fp64,1,128,10,0.05")
    assert (cfg.T, cfg.B, cfg.I, cfg.H, cfg.layers) == (100, 64, 512, 256, 2)
    assert cfg.dtype == "float64" and cfg.bidirectional and cfg.proj == 128 and cfg.window == 10
    assert cfg.reset == 0.05
    assert configs.parse_config("5,2,3,4") == configs.Config("custom", 5, 2, 3, 4)
    for bad in ("1,2,3", "1,2,3,4,1,float8", "1,2,3,4,1,float32,0,4", "0,2,3,4"):
        with pytest.raises(ValueError):
            configs.parse_config(bad)


def test_interleaved_round_robin_and_summary():
    calls = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    samples = timing.interleaved(fns, torch.device("cpu"), repeats=3, warmup=1)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")  # warm-up, then rotating order
    assert all(len(v) == 3 for v in samples.values())
    assert timing.summarize([1.0, 2.0, 3.0, 4.0, 100.0]) == (3.0, pytest.approx((4.0 - 2.0) / 3.0))


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
    device = torch.device("cpu")
    base, x, reset = runner.make_inputs(cfg, device)
    ref = check.outputs_and_grads(backends.build("reference", cfg, base, device), x, reset)
    names = ["torchscript", "nn.LSTM", "nn.LSTM-generic"]
    if cfg.bidirectional:
        names = names[:1]  # chunked nn.LSTM skips bidirectional with window/reset
    for name in names:
        got = check.outputs_and_grads(backends.build(name, cfg, base, device), x, reset)
        assert check.max_rel_error(got, ref) < 1e-10, name
    # The Python loop torch.compile drives, with an eager cell.
    params, weights = backends._loop_weights(cfg, base)
    eager = backends.Runner("eager", lambda x, r: loops.run_stack(
        lambda *a: loops.python_loop(loops.lstm_cell, *a), weights(), x, cfg, r), params)
    assert check.max_rel_error(check.outputs_and_grads(eager, x, reset), ref) < 1e-10


def test_skip_reason():
    cfg = configs.Config("bi", 5, 2, 3, 4, bidirectional=True, window=2)
    base, _, _ = runner.make_inputs(cfg, torch.device("cpu"))
    with pytest.raises(backends.Skip, match="bidirectional"):
        backends.build("nn.LSTM", cfg, base, torch.device("cpu"))


RECORD_KEYS = {"config", "backend", "mode", "median_ms", "spread", "gflops", "roofline_fraction", "device", "torch",
               "threads", "speedup_vs_nn_lstm", "peak_mib", "max_rel_error", "samples_ms", "min_ms", "roofline_gflops"}


def test_quick_preset_smoke(tmp_path, capsys):
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    # One thread: a shared, busy CI machine stalls multi-threaded runs badly.
    # (--threads sets it for the process; num_threads puts it back.)
    with num_threads(1):
        rc = bench_main.main(["--preset", "quick", "--device", "cpu", "--repeats", "1", "--warmup", "0",
                              "--threads", "1", "--json", str(out_json), "--plot", str(out_png)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "GEMM roofline" in printed and "threads" in printed

    doc = json.loads(out_json.read_text())
    assert doc["meta"]["device"] == "cpu" and doc["meta"]["torch"] == torch.__version__
    assert doc["meta"]["rooflines_gflops"]["float32"] > 0
    records = doc["records"]
    ran = {r["backend"] for r in records} | {s["backend"] for s in doc["skipped"]}
    assert ran == set(backends.NAMES)
    names = {c.name for c in configs.QUICK}
    assert {r["config"]["name"] for r in records} == names
    for r in records:
        assert RECORD_KEYS <= set(r), set(RECORD_KEYS) - set(r)
        assert r["mode"] in ("fwd", "fwd+bwd")
        assert r["median_ms"] > 0 and r["spread"] >= 0 and r["gflops"] > 0 and r["roofline_fraction"] > 0
        assert r["device"] == "cpu" and r["threads"] >= 1 and len(r["samples_ms"]) == 1
        assert r["max_rel_error"] < check.TOLERANCE[r["config"]["dtype"]], r
        if r["backend"] == "nn.LSTM":
            assert r["speedup_vs_nn_lstm"] == pytest.approx(1.0)
    for s in doc["skipped"]:
        assert s["reason"]
    assert out_png.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    "module, argv",
    [
        ("feature_cost", ["--config", "6,3,5,8", "--window", "2", "--repeats", "2"]),
        ("gemm_rates", ["--config", "4,3,20", "--repeats", "2"]),
        ("op_breakdown", ["--config", "4,3,5,20", "--repeats", "2"]),
    ],
)
def test_breakdown_tools_run(module, argv, capsys):
    import importlib

    importlib.import_module(f"bench.{module}").main(argv)
    out = capsys.readouterr().out
    assert "threads" in out and len(out.splitlines()) >= 3
