"""batchify, bptt_batches, state helpers, the in-op window and TBPTT(k1, k2)."""

import collections
import math

import pytest
import torch
from torch import nn

import rnnkernels
from rnnkernels import _extension
from rnnkernels.tbptt import TBPTT, Window, batchify, bptt_batches, detach_state, resize_state

pytestmark = pytest.mark.usefixtures("one_thread")

BACKENDS = ["reference"] + (["fused"] if _extension.cpu_extension() else [])
F64 = torch.float64


# ---------------------------------------------------------------- batchify


def test_batchify_columns_are_contiguous_slices():
    data = batchify(torch.arange(26), 4)  # 26 // 4 = 6 rows; 2 tokens dropped
    assert data.shape == (6, 4)
    for j in range(4):
        assert data[:, j].tolist() == list(range(6 * j, 6 * j + 6))
    assert data.is_contiguous()


def test_batchify_rejects_bad_input():
    with pytest.raises(ValueError):
        batchify(torch.arange(12).view(3, 4), 2)
    with pytest.raises(ValueError):
        batchify(torch.arange(3), 4)
    with pytest.raises(ValueError):
        batchify(torch.arange(8), 0)


# ---------------------------------------------------------------- bptt_batches


def _check_tiling(data, windows):
    assert torch.equal(torch.cat([w.inputs for w in windows]), data[:-1])
    assert torch.equal(torch.cat([w.targets for w in windows]), data[1:])
    for w in windows:
        assert w.inputs.shape == w.targets.shape == (w.length,) + data.shape[1:]


def test_bptt_batches_fixed_tiles_the_stream():
    data = batchify(torch.arange(1000), 8)  # 125 rows: windows of 10 cover 124
    windows = list(bptt_batches(data, 10))
    _check_tiling(data, windows)
    assert [w.length for w in windows] == [10] * 12 + [4]
    x, y = windows[0]  # unpacks as a pair
    assert torch.equal(y[:-1], x[1:])


@pytest.mark.parametrize("bptt", [8, 70])
def test_bptt_batches_variable_tiles_the_stream(bptt):
    data = batchify(torch.arange(20000), 4)
    windows = list(bptt_batches(data, bptt, variable=True, generator=torch.Generator().manual_seed(0)))
    _check_tiling(data, windows)
    assert all(5 <= w.length <= bptt + 20 for w in windows[:-1])


def test_bptt_batches_variable_length_statistics():
    bptt = 70
    data = torch.arange(400_000).view(-1, 1)
    lengths = torch.tensor([w.length for w in bptt_batches(data, bptt, True, torch.Generator().manual_seed(1))][:-1])
    full, half = lengths[lengths > 0.75 * bptt].double(), lengths[lengths <= 0.75 * bptt].double()
    n = len(lengths)
    assert n > 5000
    # Base bptt with probability 0.95, else bptt / 2; int() of Normal(base, 5) shifts the mean by about -0.5.
    assert abs(len(half) / n - 0.05) < 4 * math.sqrt(0.05 * 0.95 / n)
    assert abs(full.mean() - (bptt - 0.5)) < 0.3
    assert abs(half.mean() - (bptt / 2 - 0.5)) < 1.0
    assert 4.5 < full.std() < 5.5
    assert lengths.max() <= bptt + 20 and lengths.min() >= 5


def test_bptt_batches_is_deterministic_with_a_generator():
    data = torch.arange(5000).view(-1, 1)

    def lengths(seed):
        return [w.length for w in bptt_batches(data, 30, variable=True, generator=torch.Generator().manual_seed(seed))]

    assert lengths(3) == lengths(3)
    assert lengths(3) != lengths(4)


def test_bptt_batches_cap_and_floor():
    data = torch.arange(50000).view(-1, 1)
    g = torch.Generator().manual_seed(0)
    ls = [w.length for w in bptt_batches(data, 6, variable=True, generator=g, std=20.0, max_length=12)][:-1]
    assert min(ls) == 5 and max(ls) == 12


def test_window_type():
    w = next(bptt_batches(batchify(torch.arange(100), 2), 7))
    assert isinstance(w, Window) and w.length == 7


# ---------------------------------------------------------------- state helpers


def test_detach_state_nested():
    a = torch.randn(2, 3, requires_grad=True) * 2
    Pair = collections.namedtuple("Pair", "h c")
    state = [(a, Pair(a, a)), {"x": a}, None]
    out = detach_state(state)
    assert type(out) is list and type(out[0]) is tuple and type(out[0][1]) is Pair and type(out[1]) is dict
    assert out[2] is None
    for t in (out[0][0], out[0][1].h, out[0][1].c, out[1]["x"]):
        assert not t.requires_grad and torch.equal(t, a)
    with pytest.raises(TypeError):
        detach_state((a, 3))


def test_resize_state_truncates_and_pads():
    h = torch.randn(2, 5, 3)
    small = resize_state((h, h), 3)
    assert torch.equal(small[0], h[:, :3]) and small[1].shape == (2, 3, 3)
    big = resize_state(h, 7)
    assert torch.equal(big[:, :5], h) and torch.equal(big[:, 5:], torch.zeros(2, 2, 3))
    assert resize_state(h, 5) is h


@pytest.mark.parametrize("backend", BACKENDS)
def test_last_smaller_batch_carries_state(backend):
    """The classic crash: a carried state of batch 5 fed with a last batch of 3."""
    torch.manual_seed(0)
    lstm = rnnkernels.LSTM(4, 6, 2, backend=backend, dtype=F64)
    x = torch.randn(9, 5, 4, dtype=F64)
    with torch.no_grad():
        _, state = lstm(x[:6])
        with pytest.raises(RuntimeError, match=r"Expected hidden\[0\] size"):
            lstm(x[6:, :3], state)
        out, _ = lstm(x[6:, :3], resize_state(state, 3))
        whole, _ = lstm(x[:, :3])
    torch.testing.assert_close(out, whole[6:], rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- TBPTT(k1, k2)


class TinyLM(nn.Module):
    def __init__(self, backend, vocab=7, embed=3, hidden=5):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed, dtype=F64)
        self.lstm = rnnkernels.LSTM(embed, hidden, 2, dtype=F64, backend=backend)
        self.head = nn.Linear(hidden, vocab, dtype=F64)

    def forward(self, x, state=None):
        out, state = self.lstm(self.embed(x), state)
        return self.head(out), state


def _lm_loss(targets):
    return lambda logits: nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
    )


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def _oracle_grads(model, tokens, targets, start, end, k1, k2):
    """Gradient of the loss on the new steps [start, end) through them and the k2 - k1 before."""
    model.zero_grad()
    s0 = max(0, start - (k2 - k1))
    with torch.no_grad():
        state = model(tokens[:s0])[1] if s0 > 0 else None
    logits, _ = model(tokens[s0:end], state)
    _lm_loss(targets[start:end])(logits[start - s0 :]).backward()
    return _grads(model)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k1,k2", [(4, 4), (3, 7), (4, 6), (2, 9), (5, 8)])
def test_tbptt_gradients_match_hand_driven_oracle(backend, k1, k2):
    torch.manual_seed(0)
    T, B = 23, 3  # the last update is a shorter one
    model = TinyLM(backend)
    tokens = torch.randint(0, 7, (T + 1, B))
    inputs, targets = tokens[:-1], tokens[1:]
    runner = TBPTT(model, k1, k2)
    for start in range(0, T, k1):
        end = min(start + k1, T)
        model.zero_grad()
        loss = runner.step(inputs[start:end], _lm_loss(targets[start:end]))
        got = _grads(model)
        want = _oracle_grads(model, inputs, targets, start, end, k1, k2)
        assert not loss.requires_grad
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m: f"update at {start}: {m}")
    # The carried state is the state after all T steps, detached.
    with torch.no_grad():
        final = model(inputs)[1]
    torch.testing.assert_close(runner.state, final, rtol=1e-12, atol=1e-12)
    assert not runner.state[0].requires_grad


def test_tbptt_plain_case_has_no_replay():
    calls = []

    class Counting(TinyLM):
        def forward(self, x, state=None):
            calls.append(x.shape[0])
            return super().forward(x, state)

    model = Counting("reference")
    runner = TBPTT(model, 5, 5)
    x = torch.randint(0, 7, (16, 2))
    for a in range(0, 15, 5):
        runner.step(x[a : a + 5], _lm_loss(x[a + 1 : a + 6]))
    assert calls == [5, 5, 5]
    assert runner._history is None and runner._history_state is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_tbptt_on_a_bare_lstm_batch_first(backend):
    torch.manual_seed(0)
    lstm = rnnkernels.LSTM(2, 3, batch_first=True, dtype=F64, backend=backend)
    x = torch.randn(2, 12, 2, dtype=F64)
    runner = TBPTT(lstm, 3, 5, time_dim=1)
    for a in range(0, 12, 3):
        lstm.zero_grad()
        runner.step(x[:, a : a + 3], lambda out: out.pow(2).sum())
        got = _grads(lstm)
        lstm.zero_grad()
        s0 = max(0, a + 3 - 5)
        with torch.no_grad():
            state = lstm(x[:, :s0])[1] if s0 else None
        lstm(x[:, s0 : a + 3], state)[0][:, a - s0 :].pow(2).sum().backward()
        for g, w in zip(got, _grads(lstm)):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("k1,k2", [(4, 4), (3, 7)])
def test_tbptt_last_smaller_batch(k1, k2):
    """A shrinking batch keeps the first columns: the same as if the stream had them only."""
    torch.manual_seed(0)
    model = TinyLM("reference")
    T = 12
    tokens = torch.randint(0, 7, (T + 1, 4))
    inputs, targets = tokens[:-1], tokens[1:]
    runner = TBPTT(model, k1, k2)
    for start in range(0, T - k1, k1):
        runner.step(inputs[start : start + k1], _lm_loss(targets[start : start + k1]))
    start = T - k1
    model.zero_grad()
    runner.step(inputs[start:, :2], _lm_loss(targets[start:, :2]))
    got = _grads(model)
    want = _oracle_grads(model, inputs[:, :2], targets[:, :2], start, T, k1, k2)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # Growing again: new columns start from zero, the old ones keep their state.
    old = runner.state
    runner.step(inputs[:k1, :3], _lm_loss(targets[:k1, :3]))
    assert runner.state[0].shape[1] == 3 and old[0].shape[1] == 2


def test_tbptt_reset_and_argument_checks():
    model = TinyLM("reference")
    runner = TBPTT(model, 2, 4)
    x = torch.randint(0, 7, (3, 2))
    runner.step(x[:2], _lm_loss(x[1:]))
    assert runner.state is not None and runner._history is not None
    runner.reset()
    assert runner.state is None and runner._history is None
    with pytest.raises(ValueError):
        runner.step(x, _lm_loss(x))  # 3 steps > k1
    with pytest.raises(ValueError):
        TBPTT(model, 4, 2)
    with pytest.raises(ValueError):
        TBPTT(model, 0, 2)


# ---------------------------------------------------------------- the language model script


def test_char_lm_smoke():
    from bench import char_lm

    args = ["--steps", "25", "--batch-size", "8", "--bptt", "24", "--hidden", "48", "--embed", "16"]
    args += ["--lr", "1e-2", "--max-chars", "40000", "--no-progress", "--seed", "0", "--threads", "1"]
    result = char_lm.main(args)
    losses = result["losses"]["rnnkernels"]
    assert len(losses) == 25 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3
    assert math.isfinite(result["val_bpc"]["rnnkernels"]) and result["tokens_per_s"]["rnnkernels"] > 0
