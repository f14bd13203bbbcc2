"""rnnkernels.LSTM under DistributedDataParallel: 2 processes over gloo on this
machine, a few SGD steps on a 2-layer bidirectional model, float64.

Each rank trains its model and an oracle model from the same weights on its
own data, both wrapped in DDP. The final weights must match the oracle's to
rounding and be bitwise equal across ranks (the ranks see different data, so
that holds only if the gradients were all-reduced). One spawn runs every
scenario: starting the processes costs seconds, a scenario milliseconds.
"""

import os
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F  # noqa: N812 - the usual name
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: N817 - the usual name
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkernels
from conftest import requires_extension

pytestmark = [
    requires_extension,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend"),
]

WORLD_SIZE = 2
STEPS = 3
LR = 0.5
T, B, I, H, CLASSES = 6, 3, 4, 5, 3  # noqa: E741
PROCESS_GROUP_TIMEOUT_S = 30  # a rank stuck in a collective fails after this
JOIN_TIMEOUT_S = 120  # the whole spawn, imports included, on a slow shared machine
TOL = dict(rtol=1e-9, atol=1e-11)


class Tagger(nn.Module):
    """LSTM then a per-step linear head, on a (T, B, I) tensor or a PackedSequence."""

    def __init__(self, lstm):
        super().__init__()
        self.lstm = lstm
        self.head = nn.Linear(2 * H, CLASSES, dtype=torch.float64)

    def forward(self, x, reset=None):
        y, _ = self.lstm(x) if reset is None else self.lstm(x, reset=reset)
        if isinstance(y, nn.utils.rnn.PackedSequence):
            y, _ = pad_packed_sequence(y, total_length=T)
        return self.head(y)


class SegmentTagger(Tagger):
    """The oracle for packed input with resets: nn.LSTM run from a zero state
    on every (sample, stretch between resets), which is what a reset means."""

    def forward(self, packed, reset):
        x, lengths = pad_packed_sequence(packed, total_length=T)
        y = x.new_zeros(T, B, 2 * H)
        for b, length in enumerate(lengths.tolist()):
            starts = [0] + [t for t in range(1, length) if reset[t, b]]
            for start, end in zip(starts, starts[1:] + [length]):
                y[start:end, b : b + 1], _ = self.lstm(x[start:end, b : b + 1])
        return self.head(y)


def lstm(kind):
    cls = nn.LSTM if kind == "nn" else rnnkernels.LSTM
    return cls(I, H, num_layers=2, bidirectional=True, dtype=torch.float64)


def dense_batches(rank):
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own data
    return [((torch.randn(T, B, I, generator=g, dtype=torch.float64),),
             torch.randn(T, B, CLASSES, generator=g, dtype=torch.float64)) for _ in range(STEPS)]  # fmt: skip


def packed_reset_batches(rank):
    g = torch.Generator().manual_seed(200 + rank)
    batches = []
    for _ in range(STEPS):
        x = torch.randn(T, B, I, generator=g, dtype=torch.float64)
        lengths = torch.randint(2, T + 1, (B,), generator=g)
        lengths[0] = T  # one sample runs the whole length
        reset = torch.rand(T, B, generator=g) < 0.3
        reset[2, 1] = True  # at least one reset inside a sample
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        batches.append(((packed, reset), torch.randn(T, B, CLASSES, generator=g, dtype=torch.float64)))
    return batches


SCENARIOS = {
    # name: (model under test, oracle, batches of one rank)
    "dense": (lambda: Tagger(lstm("ours")), lambda: Tagger(lstm("nn")), dense_batches),
    "packed_reset": (lambda: Tagger(lstm("ours")), lambda: SegmentTagger(lstm("nn")), packed_reset_batches),
}


def train(model, batches):
    """STEPS of SGD under DDP; returns the final weights."""
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=LR)
    for inputs, target in batches:
        opt.zero_grad()
        F.mse_loss(ddp(*inputs), target).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def run_scenario(make_ours, make_oracle, batches, rank):
    torch.manual_seed(0)
    ours = make_ours()
    oracle = make_oracle()
    oracle.load_state_dict(ours.state_dict())
    initial = {k: v.clone() for k, v in ours.state_dict().items()}
    return dict(initial=initial, ours=train(ours, batches(rank)), oracle=train(oracle, batches(rank)))


def worker(rank, out_dir):
    torch.set_num_threads(1)  # two processes share two cores
    # The ranks meet through a file, not a port picked in advance (which
    # another process could take before rank 0 listens on it).
    dist.init_process_group(
        "gloo",
        init_method="file://" + os.path.join(out_dir, "rendezvous"),
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=timedelta(seconds=PROCESS_GROUP_TIMEOUT_S),
    )
    try:
        results = {name: run_scenario(*scenario, rank) for name, scenario in SCENARIOS.items()}
    finally:
        dist.destroy_process_group()
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


def spawn_with_deadline(fn, args, timeout_s):
    """torch.multiprocessing.spawn, but a hang fails the test instead of blocking CI."""
    context = mp.spawn(fn, args=args, nprocs=WORLD_SIZE, join=False)
    deadline = time.monotonic() + timeout_s
    try:
        while not context.join(timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                pytest.fail(f"DDP workers did not finish within {timeout_s} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ddp")
    spawn_with_deadline(worker, (str(out_dir),), JOIN_TIMEOUT_S)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD_SIZE)]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_ddp_training_matches_nn_lstm_under_ddp(ddp_results, scenario):
    for rank, results in enumerate(ddp_results):
        r = results[scenario]
        assert list(r["ours"]) == list(r["oracle"])
        for name, final in r["ours"].items():
            assert not torch.equal(final, r["initial"][name]), f"rank {rank}: {name} never moved"
            torch.testing.assert_close(final, r["oracle"][name], **TOL, msg=lambda m: f"rank {rank}, {name}: {m}")


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_ddp_weights_are_bitwise_equal_across_ranks(ddp_results, scenario):
    first, second = (results[scenario] for results in ddp_results)
    for model in ("ours", "oracle"):
        for name, weight in first[model].items():
            assert torch.equal(weight, second[model][name]), f"{model} {name} differs between ranks"
