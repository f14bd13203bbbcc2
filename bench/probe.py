"""Where the time goes at one size, for one float32 layer of rnnkernels.LSTM.

    python -m bench.probe breakdown --config T,B,I,H    # the passes beside the GEMMs inside them
    python -m bench.probe gemm --config T,B,H           # per-step products: at::mm against the panels
    python -m bench.probe features --config T,B,I,H --window 10 --reset 0.05   # what window/reset cost
    python -m bench.probe packed --config T,B,I,H --short 8   # one long sequence among short ones
    python -m bench.probe overhead --config T,B,I,H           # a 3-layer bidirectional stack, tiny sizes
    python -m bench.probe frozen --config T,B,I,H             # a training step, the layer trained or frozen
    python -m bench.probe ways --config T,B,I,H --bidirectional  # each way the CPU loops share the threads

Each subcommand times its calls round-robin in one process (bench.timing.interleaved),
so the machine's drift hits all of them alike. What the breakdown leaves after its
GEMMs is the fused gate passes plus per-step and allocation overheads.
"""

from __future__ import annotations

import argparse
import copy
import os

import numpy as np
import torch

import rnnkernels
from rnnkernels._extension import _C

from .timing import interleaved, median_ratio


def medians(fns: dict, repeats: int) -> dict:
    return {k: float(np.median(v)) for k, v in interleaved(fns, torch.device("cpu"), repeats, warmup=3).items()}


def layer(T, B, I, H):
    """A float32 training-mode layer, an input that wants its gradient, an output gradient."""
    torch.manual_seed(0)
    m = rnnkernels.LSTM(I, H, backend="fused")
    return m, torch.randn(T, B, I, requires_grad=True), torch.randn(T, B, H)


def step_products(T, B, H, dtype=torch.float32) -> dict:
    """{product: (FLOPs of T steps, {"at::mm": call, "panels": call})}. Each step multiplies
    B rows by a weight reused every step, packed once per call as the kernels do."""
    g = torch.Generator().manual_seed(0)
    w_hh = torch.randn(4 * H, H, generator=g, dtype=dtype) / H**0.5
    out = {}
    for name, a, b in (
        ("forward  h @ W_hh^T", torch.randn(B, H, generator=g, dtype=dtype), w_hh.t()),
        ("backward dG @ W_hh", torch.randn(B, 4 * H, generator=g, dtype=dtype), w_hh),
    ):
        c = torch.empty(B, b.shape[1], dtype=dtype)
        out[name] = (
            2 * T * B * a.shape[1] * b.shape[1],
            {
                "at::mm": lambda a=a, b=b, c=c: [torch.mm(a, b, out=c) for _ in range(T)],
                "panels": lambda a=a, b=b: _C.step_matmul(a, b, T),
            },
        )
    return out


def breakdown(args):
    T, B, I, H = args.config
    m, x, grad_y = layer(T, B, I, H)
    inference = copy.deepcopy(m).eval()
    wrt = [x, *m.parameters()]
    y = m(x)[0]
    w_ih, b = m.weight_ih_l0.detach(), (m.bias_ih_l0 + m.bias_hh_l0).detach()
    x2, y2, dG = x.detach().view(T * B, I), y.detach().view(T * B, H), torch.randn(T * B, 4 * H)
    (_, fwd), (_, bwd) = step_products(T, B, H).values()

    def infer():
        with torch.no_grad():
            inference(x)

    rows = medians(
        {
            "inference forward (eval, no_grad)": infer,
            "training forward": lambda: m(x),
            "  input GEMM, all steps": lambda: torch.addmm(b, x2, w_ih.t()),
            "  T products h @ W_hh^T, at::mm": fwd["at::mm"],
            "  T products h @ W_hh^T, panels": fwd["panels"],
            "backward": lambda: torch.autograd.grad(y, wrt, grad_y, retain_graph=True),
            "  dx, dW_ih, dW_hh GEMMs and bias sum": lambda: (dG @ w_ih, dG.t() @ x2, dG.t() @ y2, dG.sum(0)),
            "  T products dG @ W_hh, at::mm": bwd["at::mm"],
            "  T products dG @ W_hh, panels": bwd["panels"],
        },
        args.repeats,
    )
    print(f"T{T} B{B} I{I} H{H} float32, threads {torch.get_num_threads()}, median of {args.repeats} (ms)")
    for name, ms in rows.items():
        print(f"{name:38s} {ms:8.3f}")


def gemm(args):
    T, B, H = args.config[0], args.config[1], args.config[-1]
    dtype = getattr(torch, args.dtype)
    print(
        f"T{T} B{B} H{H} {args.dtype}, threads {torch.get_num_threads()}, median of {args.repeats}; "
        f"packed GEMM enabled: {_C.panel_gemm_enabled(dtype)}"
    )
    print(f"{'product (x T steps)':24s} {'at::mm GFLOP/s':>15s} {'panels GFLOP/s':>15s} {'ratio':>7s}")
    for name, (flops, calls) in step_products(T, B, H, dtype).items():
        r = {k: flops / (ms * 1e-3) / 1e9 for k, ms in medians(calls, args.repeats).items()}
        print(f"{name:24s} {r['at::mm']:15.1f} {r['panels']:15.1f} {r['panels'] / r['at::mm']:6.2f}x")


def features(args):
    T, B, I, H = args.config
    m, x, grad_y = layer(T, B, I, H)
    wrt = [x, *m.parameters()]
    reset = torch.rand(T, B, generator=torch.Generator().manual_seed(1)) < args.reset

    def fwd_bwd(window, reset):
        return lambda: torch.autograd.grad(m(x, window=window, reset=reset)[0], wrt, grad_y)

    rows = medians(
        {
            "plain": fwd_bwd(0, None),
            f"window={args.window}": fwd_bwd(args.window, None),
            f"reset {args.reset:.0%}": fwd_bwd(0, reset),
        },
        args.repeats,
    )
    print(
        f"T{T} B{B} I{I} H{H} float32, threads {torch.get_num_threads()}, "
        f"forward+backward, median of {args.repeats} interleaved"
    )
    for name, ms in rows.items():
        print(f"{name:14s} {ms:8.3f} ms  {100 * (ms / rows['plain'] - 1):+6.1f}%")


def against_nn_lstm(ours, calls, repeats, warmup=3):
    """Interleaved times of calls(model) for ours and an nn.LSTM with its weights."""
    ref = torch.nn.LSTM(ours.input_size, ours.hidden_size, ours.num_layers, bidirectional=ours.bidirectional)
    ref.load_state_dict(ours.state_dict())
    fns = {f"{k} {name}": fn for name, m in (("rnnkernels", ours), ("nn.LSTM", ref)) for k, fn in calls(m).items()}
    return interleaved(fns, torch.device("cpu"), repeats, warmup)


def packed(args):
    """Inference and a training step on a packed batch of one sequence of T
    steps and B-1 of --short steps, beside the same batch padded."""
    T, B, I, H = args.config
    torch.manual_seed(0)
    ours = rnnkernels.LSTM(I, H)
    x = torch.randn(T, B, I, requires_grad=True)
    lengths = torch.tensor([T] + [args.short] * (B - 1))
    batch = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)

    def calls(m):
        def infer(inp):
            def f():
                m.eval()
                with torch.no_grad():
                    m(inp)

            return f

        def step(inp):
            def f():
                m.train()
                out, (h, c) = m(inp)
                out = out.data if isinstance(out, torch.nn.utils.rnn.PackedSequence) else out
                torch.autograd.grad(out.sum() + h.sum() + c.sum(), [x, *m.parameters()], retain_graph=True)

            return f

        return {"inference packed": infer(batch), "inference padded": infer(x), "step packed": step(batch),
                "step padded": step(x)}  # fmt: skip

    ms = against_nn_lstm(ours, calls, args.repeats)
    print(f"T{T} B{B} I{I} H{H}: one sequence of {T} steps, {B - 1} of {args.short}; threads {torch.get_num_threads()}")
    for mode in ("inference", "step"):
        ours_p, ours_d, nn_p = (ms[f"{mode} {k}"] for k in ("packed rnnkernels", "padded rnnkernels", "packed nn.LSTM"))
        print(f"{mode:9s} packed {np.median(ours_p):8.2f} ms = {median_ratio(ours_p, ours_d):.1%} of padded; "
              f"nn.LSTM packed {np.median(nn_p):8.2f} ms = {median_ratio(nn_p, ours_p):.2f}x ours")  # fmt: skip


def overhead(args):
    """A training step and an inference call of a 3-layer bidirectional stack
    at sizes where only the fixed cost of a call counts."""
    T, B, I, H = args.config
    torch.manual_seed(0)
    ours = rnnkernels.LSTM(I, H, num_layers=3, bidirectional=True)
    x = torch.randn(T, B, I)

    def calls(m):
        def step():
            y, (h, c) = m.train()(x)
            torch.autograd.grad(y.sum() + h.sum() + c.sum(), list(m.parameters()))

        def infer():
            with torch.no_grad():
                m.eval()(x)

        return {"step": step, "inference": infer}

    ms = against_nn_lstm(ours, calls, args.repeats, warmup=50)
    print(f"3-layer bidirectional T{T} B{B} I{I} H{H}, threads {torch.get_num_threads()}")
    for mode in ("step", "inference"):
        a, b = ms[f"{mode} rnnkernels"], ms[f"{mode} nn.LSTM"]
        print(f"{mode:9s} rnnkernels {np.median(a) * 1e3:7.0f} us, nn.LSTM {np.median(b) * 1e3:7.0f} us: "
              f"{median_ratio(b, a):.2f}x")  # fmt: skip


def frozen(args):
    """A training step whose input needs its gradient, the layer's weights
    trained or frozen (requires_grad False: no weight gradients to compute)."""
    T, B, I, H = args.config
    torch.manual_seed(0)
    ours = rnnkernels.LSTM(I, H)
    x = torch.randn(T, B, I, requires_grad=True)

    def calls(m):
        def step(train):
            def f():
                m.requires_grad_(train)
                torch.autograd.grad(m(x)[0].sum(), [x, *m.parameters()] if train else [x])

            return f

        return {"trained": step(True), "frozen": step(False)}

    ms = against_nn_lstm(ours, calls, args.repeats)
    print(f"T{T} B{B} I{I} H{H} float32 training step, threads {torch.get_num_threads()}")
    for mode in ("trained", "frozen"):
        a, b = ms[f"{mode} rnnkernels"], ms[f"{mode} nn.LSTM"]
        print(f"{mode:8s} rnnkernels {np.median(a):8.3f} ms, nn.LSTM {np.median(b):8.3f} ms: {median_ratio(b, a):.2f}x")


def ways(args):
    """Inference and a training step under each way the CPU time loops can share
    the threads (RNNKERNELS_CPU_SPLIT, and for two directions
    RNNKERNELS_CPU_DIRECTIONS) and on packed weights where the forward may run
    unit-major (RNNKERNELS_CPU_WEIGHTS), beside the way the kernels pick."""
    T, B, I, H = args.config
    torch.manual_seed(0)
    m = rnnkernels.LSTM(I, H, args.layers, bidirectional=args.bidirectional, proj_size=args.proj)
    x = torch.randn(T, B, I, requires_grad=True)
    shares = {
        "picked": {},
        "by units": {"RNNKERNELS_CPU_SPLIT": "units"},
        "by samples": {"RNNKERNELS_CPU_SPLIT": "samples"},
        "packed weights": {"RNNKERNELS_CPU_WEIGHTS": "packed"},
    }
    if args.bidirectional:
        shares["directions together"] = {"RNNKERNELS_CPU_DIRECTIONS": "together"}
        shares["directions apart"] = {"RNNKERNELS_CPU_DIRECTIONS": "apart"}

    def under(env, fn):
        def f():
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                fn()
            finally:
                for k, v in saved.items():
                    if v is None:
                        del os.environ[k]
                    else:
                        os.environ[k] = v

        return f

    def infer():
        with torch.no_grad():
            m(x)

    def step():
        torch.autograd.grad(m(x)[0].sum(), [x, *m.parameters()])

    modes = {"inference": infer, "step": step}
    fns = {(mode, way): under(env, fn) for mode, fn in modes.items() for way, env in shares.items()}
    ms = interleaved(fns, torch.device("cpu"), args.repeats, warmup=3, sample_ms=20.0)
    print(f"T{T} B{B} I{I} H{H} layers {args.layers}{' bidirectional' * args.bidirectional}"
          f"{f' proj {args.proj}' * bool(args.proj)}, threads {torch.get_num_threads()}, "
          f"median of {args.repeats} interleaved")  # fmt: skip
    for mode in modes:
        for way in shares:
            t, picked = ms[(mode, way)], ms[(mode, "picked")]
            print(f"{mode:9s} {way:19s} {np.median(t):9.3f} ms  its time / picked {median_ratio(t, picked):.3f}")


def main(argv=None) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=int, default=None)
    common.add_argument("--repeats", type=int, default=30)
    p = argparse.ArgumentParser(prog="python -m bench.probe", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for fn, config, what in (
        (breakdown, "35,20,200,200", "the module's passes beside their GEMMs"),
        (gemm, "35,20,200", "per-step products, at::mm against the panels"),
        (features, "100,16,256,256", "forward+backward plain, with window, with reset"),
        (packed, "400,32,256,256", "a packed batch of one long and many short sequences, against padded"),
        (overhead, "1,1,8,8", "the fixed cost of a call: 3-layer bidirectional, tiny sizes"),
        (frozen, "35,32,512,512", "a training step, the layer's weights trained or frozen"),
        (ways, "50,16,256,256", "each way the CPU time loops can share the threads"),
    ):
        s = sub.add_parser(fn.__name__, parents=[common], help=what)
        s.add_argument("--config", default=config, help=f"default {config}")
        s.set_defaults(run=fn)
    sub.choices["gemm"].add_argument("--dtype", default="float32", choices=["float32", "float64"])
    sub.choices["features"].add_argument("--window", type=int, default=10)
    sub.choices["features"].add_argument("--reset", type=float, default=0.05, help="probability a step resets")
    sub.choices["features"].set_defaults(repeats=60)
    sub.choices["packed"].add_argument("--short", type=int, default=8, help="steps of the short sequences")
    sub.choices["packed"].set_defaults(repeats=9)
    sub.choices["overhead"].set_defaults(repeats=400)
    sub.choices["frozen"].set_defaults(repeats=15)
    sub.choices["ways"].add_argument("--layers", type=int, default=1)
    sub.choices["ways"].add_argument("--bidirectional", action="store_true")
    sub.choices["ways"].add_argument("--proj", type=int, default=0)
    sub.choices["ways"].set_defaults(repeats=15)
    args = p.parse_args(argv)
    if _C is None:
        raise SystemExit("the rnnkernels extension is not built")
    args.config = tuple(int(v) for v in args.config.split(","))
    if len(args.config) != 4 and not (args.run is gemm and len(args.config) == 3) or min(args.config) < 1:
        p.error("--config wants T,B,I,H (gemm: T,B,H or T,B,I,H)")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.run(args)


if __name__ == "__main__":
    main()
