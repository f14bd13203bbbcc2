"""torch.func transforms and forward-mode AD on rnnkernels.LSTM.

The fused op's derivative is a backward written in C++, which torch.func's
transforms and forward-mode AD cannot use: the module runs such calls on the
reference, so that grad, jacrev, jacfwd, jvp, Hessian-vector products, vmap
and torch.autograd.forward_ad give what they give on nn.LSTM. The oracles:
nn.LSTM with copied weights under the same transform; a loop over sequences
or over models where nn.LSTM has no batching rule (vmap, ensembling) or no
forward derivative (packing); the step-by-step oracle of test_reset.py for windows and resets. The op
called directly refuses forward-mode AD rather than return outputs without
tangents.
"""

import copy

import pytest
import torch
from test_op import CountOps
from test_reset import oracle as step_oracle
from torch.autograd import forward_ad
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, stack_module_state, vmap
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from conftest import assert_close_all, lstm_pair, requires_extension

pytestmark = [
    requires_extension,
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated"),  # raised inside torch.func
]

F64 = dict(rtol=1e-9, atol=1e-10)
CONFIGS = {
    "plain": dict(),
    "stack-bidirectional": dict(num_layers=2, bidirectional=True),
    "proj": dict(proj_size=3),
    "batch-first-no-bias": dict(batch_first=True, bias=False),
}


def case(config, T=5, B=3, I=4, H=5):  # noqa: E741
    """nn.LSTM and rnnkernels.LSTM with the same weights, the weights, and an
    input with its initial state."""
    ref, ours = lstm_pair(I, H, **CONFIGS[config])
    g = torch.Generator().manual_seed(3)
    shape = (B, T, I) if ref.batch_first else (T, B, I)
    D = 2 if ref.bidirectional else 1
    P = ref.proj_size or H
    x, h0, c0 = (torch.randn(*s, generator=g, dtype=torch.float64) for s in (shape, (D * ref.num_layers, B, P),
                                                                             (D * ref.num_layers, B, H)))  # fmt: skip
    params = {n: p.detach() for n, p in ref.named_parameters()}
    return ref, ours, params, (x, h0, c0)


def loss(m):
    """(params, x, h0, c0) -> a scalar that weighs every output differently."""

    def f(params, x, h0, c0):
        y, (h, c) = functional_call(m, params, (x, (h0, c0)))
        return sum((o * torch.linspace(-1, 2, o.numel(), dtype=o.dtype).view(o.shape)).sum() for o in (y, h, c))

    return f


def outputs(m, params):
    def f(x, h0, c0):
        y, (h, c) = functional_call(m, params, (x, (h0, c0)))
        return y, h, c

    return f


def tangents_like(tree, seed=5):
    g = torch.Generator().manual_seed(seed)
    return torch.utils._pytree.tree_map(lambda t: torch.randn(t.shape, generator=g, dtype=t.dtype), tree)


def flat(tree):
    return torch.utils._pytree.tree_leaves(tree)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_reverse_mode_transforms_match_nn_lstm(config):
    ref, ours, params, inputs = case(config)
    want = grad(loss(ref), argnums=(0, 1, 2, 3))(params, *inputs)
    got = grad(loss(ours), argnums=(0, 1, 2, 3))(params, *inputs)
    assert_close_all(flat(got), flat(want), **F64)
    want = jacrev(outputs(ref, params), argnums=(0, 1))(*inputs)
    got = jacrev(outputs(ours, params), argnums=(0, 1))(*inputs)
    assert_close_all(flat(got), flat(want), **F64)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_forward_mode_transforms_match_nn_lstm(config):
    ref, ours, params, inputs = case(config)
    primals = (params, *inputs)
    tangents = tangents_like(primals)

    def run(m):
        return lambda p, x, h0, c0: outputs(m, p)(x, h0, c0)

    want = jvp(run(ref), primals, tangents)
    got = jvp(run(ours), primals, tangents)
    assert_close_all(flat(got), flat(want), **F64)
    assert all(t.abs().max() > 0 for t in flat(got[1]))  # tangents that are there, not dropped
    want = jacfwd(outputs(ref, params), argnums=(0, 2))(*inputs)
    got = jacfwd(outputs(ours, params), argnums=(0, 2))(*inputs)
    assert_close_all(flat(got), flat(want), **F64)


@pytest.mark.parametrize("config", ["plain", "stack-bidirectional"])
def test_forward_ad_matches_nn_lstm(config):
    ref, ours, params, inputs = case(config)
    tangents = tangents_like((params, inputs))
    results = []
    for m in (ref, ours):
        with forward_ad.dual_level():
            dual_params = {n: forward_ad.make_dual(p, tangents[0][n]) for n, p in params.items()}
            x, h0, c0 = (forward_ad.make_dual(t, d) for t, d in zip(inputs, tangents[1]))
            y, (h, c) = functional_call(m, dual_params, (x, (h0, c0)))
            results.append([part for o in (y, h, c) for part in forward_ad.unpack_dual(o)[:2]])
    assert_close_all(results[1], results[0], **F64)


def test_hessian_vector_product_forward_over_reverse():
    ref, ours, params, inputs = case("stack-bidirectional")
    v = tangents_like(params)

    def hvp(m):
        return jvp(lambda p: grad(loss(m))(p, *inputs), (params,), (v,))[1]

    assert_close_all(flat(hvp(ours)), flat(hvp(ref)), **F64)


def test_vmap_matches_a_loop_over_sequences():
    """nn.LSTM has no batching rule, so the oracle is a loop. Per-sample
    gradients: each sequence alone, unbatched (2-D) inside vmap."""
    ref, ours, params, _ = case("stack-bidirectional")
    g = torch.Generator().manual_seed(7)
    xs = torch.randn(4, 5, 3, 4, generator=g, dtype=torch.float64)  # 4 batches of (T, B, I)
    got = vmap(lambda x: ours(x)[0])(xs)
    want = torch.stack([ref(x)[0] for x in xs])
    torch.testing.assert_close(got, want, **F64)

    seqs = xs[:, :, 0]  # 4 sequences of (T, I)

    def seq_loss(m):
        return lambda p, x: (functional_call(m, p, (x,))[0] ** 2).sum()

    got = vmap(grad(seq_loss(ours)), in_dims=(None, 0))(params, seqs)
    for n, x in enumerate(seqs):
        want = grad(seq_loss(ref))(params, x)
        assert_close_all([got[k][n] for k in want], list(want.values()), **F64)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_window_and_reset_under_transforms_match_the_step_oracle(bidirectional):
    _, ours, _, _ = case("plain" if not bidirectional else "stack-bidirectional", T=8)
    oracle_lstm = torch.nn.LSTM(4, 5, num_layers=ours.num_layers, bidirectional=bidirectional, dtype=torch.float64)
    oracle_lstm.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(11)
    D = 2 if bidirectional else 1
    x = torch.randn(8, 3, 4, generator=g, dtype=torch.float64)
    h0, c0 = (torch.randn(D * ours.num_layers, 3, 5, generator=g, dtype=torch.float64) for _ in range(2))
    reset = torch.rand(8, 3, generator=g) < 0.2

    def run_ours(x, h0, c0):
        y, (h, c) = ours(x, (h0, c0), window=3, reset=reset)
        return y, h, c

    def run_oracle(x, h0, c0):
        y, (h, c) = step_oracle(oracle_lstm, x, h0, c0, reset, window=3)
        return y, h, c

    primals = (x, h0, c0)
    tangents = tangents_like(primals)
    assert_close_all(flat(jvp(run_ours, primals, tangents)), flat(jvp(run_oracle, primals, tangents)), **F64)
    want = jacrev(lambda *a: run_oracle(*a)[0], argnums=(0, 1))(*primals)
    got = jacrev(lambda *a: run_ours(*a)[0], argnums=(0, 1))(*primals)
    assert_close_all(flat(got), flat(want), **F64)


def test_packed_input_under_jvp_matches_a_loop_over_sequences():
    """Packing has no forward derivative in PyTorch, so the packed rows are
    made dual as they are; the oracle runs each sequence alone."""
    ref, ours, params, (x, _, _) = case("stack-bidirectional")
    lengths = torch.tensor([5, 2, 4])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    tangent = tangents_like(x)

    def run_ours(data):
        y, (h, c) = ours(PackedSequence(data, *packed[1:]))
        return y.data, h, c

    def run_ref(seq):
        y, (h, c) = ref(seq)
        return y, h, c

    rows_tangent = pack_padded_sequence(tangent, lengths, enforce_sorted=False).data
    got = jvp(run_ours, (packed.data,), (rows_tangent,))
    unpack = lambda rows: pad_packed_sequence(PackedSequence(rows, *packed[1:]), total_length=5)[0]  # noqa: E731
    for b, n in enumerate(lengths.tolist()):
        want = jvp(run_ref, (x[:n, b : b + 1],), (tangent[:n, b : b + 1],))
        for values, values_want in zip(got, want):  # primals, then tangents
            y, h, c = values
            assert_close_all([unpack(y)[:n, b : b + 1], h[:, b : b + 1], c[:, b : b + 1]], list(values_want), **F64)


def test_the_op_refuses_forward_ad():
    _, ours, _, (x, h0, c0) = case("plain")
    weights = [p.detach() for p in ours.parameters()]

    def op(x, weights=weights):
        return torch.ops.rnnkernels.lstm(x, h0, c0, weights, None, None, True, 1, False, 0.0, False, 0)[0]

    with pytest.raises(NotImplementedError, match="forward AD with rnnkernels::lstm"):
        jvp(op, (x,), (torch.ones_like(x),))
    with forward_ad.dual_level():
        with pytest.raises(NotImplementedError, match="forward AD with rnnkernels::lstm"):
            op(x, [forward_ad.make_dual(weights[0], torch.ones_like(weights[0]))] + weights[1:])
        op(x)  # no tangent: runs


def test_the_fused_op_runs_unless_a_transform_needs_the_reference():
    _, ours, params, (x, h0, c0) = case("plain")
    with CountOps() as count:
        ours(x, (h0, c0))
    assert count.calls == ["lstm_forward.default"]  # the parameters need gradients
    with forward_ad.dual_level(), CountOps() as count:
        ours(x, (h0, c0))  # a dual level, but no tangent on this call's tensors
    assert count.calls == ["lstm_forward.default"]
    with CountOps() as count:
        grad(loss(ours))(params, x, h0, c0)
    assert count.calls == []


def test_model_ensembling_matches_each_model():
    """torch.func's ensembling recipe: stacked weights of several models under
    vmap, on a meta-device copy of the module."""
    models = [lstm_pair(4, 5, seed=s, num_layers=2)[1] for s in range(3)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    got = vmap(lambda p, b: functional_call(base, (p, b), (x,))[0])(params, buffers)
    torch.testing.assert_close(got, torch.stack([m(x)[0] for m in models]), **F64)
