"""Truncated backpropagation through time: data layout (``batchify``), windows
(``bptt_batches``), carried state (``detach_state``, ``resize_state``) and ``TBPTT(k1, k2)``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["batchify", "bptt_batches", "Window", "detach_state", "resize_state", "TBPTT"]


def batchify(tokens: Tensor, batch_size: int) -> Tensor:
    """Cut a 1-D stream into ``batch_size`` contiguous slices, one per column.

    Returns a ``(N, batch_size)`` view-free tensor with ``N = len(tokens) //
    batch_size``: column j holds ``tokens[j*N : (j+1)*N]``. The remainder that
    does not fill a whole row is dropped. Reading down a column walks through
    the stream in order, so a state carried from one row window to the next
    continues the same text in every column.
    """
    if tokens.dim() != 1:
        raise ValueError(f"batchify expects a 1-D stream, got shape {list(tokens.shape)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n = tokens.numel() // batch_size
    if n == 0:
        raise ValueError(f"a stream of {tokens.numel()} tokens cannot fill {batch_size} columns")
    return tokens[: n * batch_size].reshape(batch_size, n).t().contiguous()


class Window(NamedTuple):
    """One bptt window. Unpacks as ``inputs, targets``; ``length`` is L."""

    inputs: Tensor
    targets: Tensor

    @property
    def length(self) -> int:
        return self.inputs.shape[0]


def bptt_batches(
    data: Tensor,
    bptt: int,
    variable: bool = False,
    generator: torch.Generator | None = None,
    *,
    p_full: float = 0.95,
    std: float = 5.0,
    min_length: int = 5,
    max_length: int | None = None,
) -> Iterator[Window]:
    """Yield windows ``(inputs, targets)`` over the rows of ``data`` (N, B, ...).

    Window i covers rows ``[s, s+L)`` as inputs and ``[s+1, s+L+1)`` as targets,
    and the next window starts at ``s+L``: the windows tile rows ``0 .. N-2``
    with no gap and no overlap. The last window is shorter if the rows run out.

    ``variable=True`` draws each L as awd-lstm does: a base of ``bptt`` with
    probability ``p_full`` else ``bptt / 2``, then ``L = int(Normal(base, std))``
    clipped to ``[min_length, max_length]`` (``max_length`` defaults to
    ``bptt + 20``, which bounds memory). The draws use ``generator`` (a
    ``torch.Generator`` on the CPU) so a seeded generator gives the same
    windows every time. Scale the learning rate by ``window.length / bptt``
    so that every token gets the same weight whatever the length.
    """
    if isinstance(bptt, bool) or not isinstance(bptt, int) or bptt < 1:
        raise ValueError(f"bptt must be a positive int, got {bptt!r}")
    cap = bptt + 20 if max_length is None else max_length
    if variable and not 1 <= min_length <= cap:
        raise ValueError(f"need 1 <= min_length <= max_length, got {min_length} and {cap}")
    n = data.shape[0]
    start = 0
    while start < n - 1:
        length = _draw_length(bptt, p_full, std, min_length, cap, generator) if variable else bptt
        length = min(length, n - 1 - start)
        yield Window(data[start : start + length], data[start + 1 : start + 1 + length])
        start += length


def _draw_length(bptt, p_full, std, min_length, max_length, generator) -> int:
    base = bptt if torch.rand((), generator=generator).item() < p_full else bptt / 2
    length = int(base + std * torch.randn((), generator=generator).item())
    return max(min_length, min(length, max_length))


def detach_state(state):
    """The same state cut off from the graph that produced it.

    Works on a tensor, ``None``, and tuples, lists and dicts of them (nested),
    keeping their types (named tuples included). Call it between windows so the
    next backward stops here instead of reaching into windows whose graph is
    already freed (the "backward through the graph a second time" error) and so
    memory does not grow with the length of the stream.
    """
    return _map_state(state, lambda t: t.detach())


def resize_state(state, batch_size: int, dim: int = 1):
    """Fit a carried state to a new batch size along ``dim``.

    Fewer samples: keep the first ``batch_size`` (the columns that continue).
    More samples: pad with zeros (new streams start from a zero state).
    The default ``dim=1`` is the batch dimension of ``nn.LSTM``'s ``(h, c)``,
    each shaped ``(num_layers * num_directions, B, H)``. A state that already
    has ``batch_size`` samples is returned as it is (no copy).
    """

    def fit(t: Tensor) -> Tensor:
        b = t.shape[dim]
        if b == batch_size:
            return t
        if b > batch_size:
            return t.narrow(dim, 0, batch_size)
        pad = list(t.shape)
        pad[dim] = batch_size - b
        return torch.cat([t, t.new_zeros(pad)], dim)

    return _map_state(state, fit)


def _map_state(state, fn):
    if state is None:
        return None
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(_map_state(s, fn) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(_map_state(s, fn) for s in state)
    if isinstance(state, dict):
        return type(state)((k, _map_state(v, fn)) for k, v in state.items())
    raise TypeError(f"a state must be a tensor or (nested) tuple/list/dict of tensors, got {type(state).__name__}")


def _batch_size(state, dim):
    if isinstance(state, Tensor):
        return state.shape[dim]
    items = state.values() if isinstance(state, dict) else state
    for s in items:
        b = _batch_size(s, dim) if s is not None else None
        if b is not None:
            return b
    return None


class TBPTT:
    """Sutskever's TBPTT(k1, k2): every k1 new steps, backpropagate through the last k2.

    ``module(x, state) -> (out, state)`` runs a stretch of steps from a state
    (``None`` for a zero state): an ``rnnkernels.LSTM`` or ``nn.LSTM`` as it is,
    or a model that wraps one (embedding, LSTM, head) with that signature. Keep
    everything with parameters inside ``module``: inputs are treated as data
    (detached) because the k2 - k1 older steps are run again at the next
    update, long after the graph that first produced them was freed.

    ``step(x_new, loss_fn)`` runs the k1 new steps of ``x_new`` (time along
    ``time_dim``), replaying the k2 - k1 older inputs first from the state saved
    at the start of that range, calls ``loss_fn(out_new).backward()`` on the
    outputs of the new steps only, and returns the loss, detached. So the
    graph always reaches k2 - k1 steps behind the new ones (k2 in all when
    ``x_new`` has k1 steps; a shorter last piece gets a shorter graph). The caller
    zeroes gradients and steps the optimizer. With k1 == k2 nothing is kept
    or replayed: one forward, one backward, the state detached.

    ``state_dim`` is the batch dimension of the state tensors (1 for LSTM's
    ``(h, c)``). If the batch shrinks (the last, smaller batch) the state and
    the history keep their first columns; if it grows, new columns start at a
    zero state and the replay history restarts. ``reset()`` starts a new
    stream. Dropout inside ``module`` draws new masks when steps are replayed.
    """

    def __init__(self, module: Callable, k1: int, k2: int, *, time_dim: int = 0, state_dim: int = 1):
        for name, k in (("k1", k1), ("k2", k2)):
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ValueError(f"{name} must be a positive int, got {k!r}")
        if k2 < k1:
            raise ValueError(f"TBPTT needs k2 >= k1, got k1={k1}, k2={k2}")
        if time_dim not in (0, 1):
            raise ValueError(f"time_dim must be 0 or 1, got {time_dim!r}")
        self.module, self.k1, self.k2 = module, k1, k2
        self.time_dim, self.state_dim = time_dim, state_dim
        self.reset()

    def reset(self) -> None:
        """Forget the carried state and history: the next step starts a new stream."""
        self.state = None  # detached state after the last step
        self._history: Tensor | None = None  # up to k2 - k1 most recent inputs
        self._history_state = None  # detached state before the first of them

    def step(self, x_new: Tensor, loss_fn: Callable[[Tensor], Tensor]) -> Tensor:
        n = x_new.shape[self.time_dim]
        if not 1 <= n <= self.k1:
            raise ValueError(f"step takes 1 to k1={self.k1} new steps along dim {self.time_dim}, got {n}")
        self._fit_batch(x_new.shape[1 - self.time_dim])
        if self.k1 == self.k2:
            out, state = self.module(x_new, self.state)
            loss = loss_fn(out)
            loss.backward()
            self.state = detach_state(state)
            return loss.detach()
        return self._replay_step(x_new.detach(), loss_fn)

    def _replay_step(self, x_new, loss_fn):
        old = 0 if self._history is None else self._history.shape[self.time_dim]
        seq = x_new if old == 0 else torch.cat([self._history, x_new], self.time_dim)
        total = old + x_new.shape[self.time_dim]
        keep_from = max(0, total - (self.k2 - self.k1))  # where the next history starts
        # Run in pieces split where the new outputs start and where the next history starts.
        cuts = sorted({0, old, keep_from, total})
        state, outs, next_history_state = self._history_state, [], None
        for a, b in zip(cuts[:-1], cuts[1:]):
            if a == keep_from:
                next_history_state = detach_state(state)
            out, state = self.module(seq.narrow(self.time_dim, a, b - a), state)
            if a >= old:
                outs.append(out)
        if keep_from == total:
            next_history_state = detach_state(state)
        out_new = outs[0] if len(outs) == 1 else torch.cat(outs, self.time_dim)
        loss = loss_fn(out_new)
        loss.backward()
        self.state = detach_state(state)
        self._history_state = next_history_state
        # A copy: the caller may reuse the buffer behind x_new.
        self._history = seq.narrow(self.time_dim, keep_from, total - keep_from).clone() if keep_from < total else None
        return loss.detach()

    def _fit_batch(self, batch_size: int) -> None:
        if self.state is None:
            return
        old = _batch_size(self.state, self.state_dim)
        if old is None or old == batch_size:
            return
        self.state = resize_state(self.state, batch_size, self.state_dim)
        if old < batch_size:
            # New columns have no past to replay: the history restarts here.
            self._history, self._history_state = None, self.state
            return
        if self._history is not None:
            self._history = self._history.narrow(1 - self.time_dim, 0, batch_size)
        self._history_state = resize_state(self._history_state, batch_size, self.state_dim)
