"""A character-level language model trained with truncated BPTT on real text.

The text is CPython's own ``pydoc_data.topics`` (it ships with Python, so nothing
downloads); the last 10% is held out for validation. The stream is laid out with
``batchify``, cut into windows by ``bptt_batches`` and the LSTM state is carried
from window to window, detached.

    python -m bench.char_lm                       # rnnkernels.LSTM, a few minutes on 2 cores
    python -m bench.char_lm --backend nn.LSTM
    python -m bench.char_lm --compare             # both, same seed and weights, in lockstep
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from torch import nn
from tqdm import tqdm

import rnnkernels
from rnnkernels.tbptt import batchify, bptt_batches, detach_state

BACKENDS = ("rnnkernels", "nn.LSTM")


def load_text() -> str:
    from pydoc_data.topics import topics

    return "\n".join(topics[k] for k in sorted(topics))


def encode(text: str):
    vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}
    return torch.tensor([index[ch] for ch in text], dtype=torch.long), vocab


def unigram_bits(ids: torch.Tensor, vocab_size: int) -> float:
    p = torch.bincount(ids, minlength=vocab_size).double() / ids.numel()
    p = p[p > 0]
    return float(-(p * p.log2()).sum())


class CharLM(nn.Module):
    """Embedding, a stacked LSTM, a linear head: forward(x, state) -> (logits, state)."""

    def __init__(self, vocab_size, embed, hidden, layers, dropout, backend):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed)
        lstm = rnnkernels.LSTM if backend == "rnnkernels" else nn.LSTM
        self.lstm = lstm(embed, hidden, layers, dropout=dropout)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, x, state=None):
        out, state = self.lstm(self.embed(x), state)
        return self.head(out), state


class Trainer:
    """One model, its optimizer, its own stream of windows and its carried state."""

    def __init__(self, model, data, args):
        self.model, self.data, self.args = model, data, args
        self.opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        self.gen = torch.Generator().manual_seed(args.seed)  # same windows for every backend
        self.windows = self._endless()
        self.state, self.losses, self.seconds, self.tokens = None, [], 0.0, 0

    def _endless(self):
        while True:
            self.state = None  # a new epoch starts the stream again
            yield from bptt_batches(self.data, self.args.bptt, variable=self.args.variable, generator=self.gen)

    def step(self, timed=True):
        w = next(self.windows)
        t0 = time.perf_counter()
        # awd-lstm: a shorter window gets a proportionally smaller step.
        for group in self.opt.param_groups:
            group["lr"] = self.args.lr * w.length / self.args.bptt
        logits, state = self.model(w.inputs, self.state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w.targets.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.args.clip)
        self.opt.step()
        # Keep the values, drop the graph: the next window starts where this one ended.
        self.state = detach_state(state)
        if timed:
            self.seconds += time.perf_counter() - t0
            self.tokens += w.inputs.numel()
        self.losses.append(loss.item())
        return self.losses[-1]

    def tokens_per_s(self):
        return self.tokens / self.seconds if self.seconds else float("nan")


@torch.no_grad()
def evaluate_bpc(model, ids, batch_size, bptt) -> float:
    model.eval()
    data = batchify(ids, batch_size)
    state, total, count = None, 0.0, 0
    for w in bptt_batches(data, bptt):
        logits, state = model(w.inputs, state)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w.targets.reshape(-1), reduction="sum").item()
        count += w.targets.numel()
    model.train()
    return total / count / math.log(2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.char_lm", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300, help="optimizer steps (one bptt window each)")
    p.add_argument("--batch-size", type=int, default=32, help="columns of the batchified stream")
    p.add_argument("--bptt", type=int, default=64, help="base window length in time steps")
    p.add_argument(
        "--variable", action=argparse.BooleanOptionalAction, default=True, help="awd-lstm random window lengths"
    )
    p.add_argument("--backend", choices=BACKENDS, default="rnnkernels")
    p.add_argument("--compare", action="store_true", help="train both backends from the same weights, in lockstep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--embed", type=int, default=32)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.0, help="between LSTM layers (breaks exact --compare)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.add_argument("--max-chars", type=int, default=0, help="use only the first N characters (0 = all)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)  # leave the caller's process as it was


def run(args) -> dict:
    text = load_text()
    if args.max_chars:
        text = text[: args.max_chars]
    ids, vocab = encode(text)
    split = int(0.9 * len(ids))
    train_ids, val_ids = ids[:split], ids[split:]
    train_data = batchify(train_ids, args.batch_size)

    backends = BACKENDS if args.compare else (args.backend,)
    torch.manual_seed(args.seed)
    first = CharLM(len(vocab), args.embed, args.hidden, args.layers, args.dropout, backends[0])
    trainers = {backends[0]: Trainer(first, train_data, args)}
    for name in backends[1:]:
        twin = CharLM(len(vocab), args.embed, args.hidden, args.layers, args.dropout, name)
        twin.load_state_dict(first.state_dict())  # the same starting weights
        trainers[name] = Trainer(twin, train_data, args)

    print(
        f"text: {len(ids)} chars, vocab {len(vocab)}, train {len(train_ids)} / validation {len(val_ids)}; "
        f"layout {tuple(train_data.shape)}, bptt {args.bptt}{' (variable)' if args.variable else ''}; "
        f"threads {torch.get_num_threads()}"
    )
    bar = tqdm(range(args.steps), disable=args.no_progress, desc="train", unit="step")
    for step in bar:
        # Lockstep: both backends see the same machine load, so their speeds compare fairly.
        for tr in trainers.values():
            torch.manual_seed(args.seed + step)  # same dropout masks where the backends draw alike
            tr.step(timed=step > 0)  # the first step warms up
        bar.set_postfix(
            {f"loss[{n}]": f"{t.losses[-1]:.3f}" for n, t in trainers.items()}
            | {f"tok/s[{n}]": f"{t.tokens_per_s():.0f}" for n, t in trainers.items()}
        )
    bar.close()

    result = {"unigram_bits": unigram_bits(train_ids, len(vocab)), "losses": {}, "val_bpc": {}, "tokens_per_s": {}}
    for name, tr in trainers.items():
        result["losses"][name] = tr.losses
        result["val_bpc"][name] = evaluate_bpc(tr.model, val_ids, args.eval_batch_size, args.bptt)
        result["tokens_per_s"][name] = tr.tokens_per_s()
        print(
            f"{name:>10}: final train loss {tr.losses[-1]:.4f} nats, validation {result['val_bpc'][name]:.3f} bpc, "
            f"{result['tokens_per_s'][name]:.0f} tokens/s (training steps, threads {torch.get_num_threads()})"
        )
    print(f"unigram entropy of the training text: {result['unigram_bits']:.3f} bits per character")
    if len(trainers) == 2:
        a, b = (t.losses for t in trainers.values())
        result["max_abs_diff"] = max(abs(x - y) for x, y in zip(a, b))
        speed = result["tokens_per_s"]
        print(
            f"loss curves: max |rnnkernels - nn.LSTM| over {len(a)} steps = {result['max_abs_diff']:.2e} nats; "
            f"throughput ratio rnnkernels / nn.LSTM = {speed['rnnkernels'] / speed['nn.LSTM']:.2f}"
        )
    return result


if __name__ == "__main__":
    main()
