"""Getting a model with rnnkernels.LSTM out of training: torch.export (dynamic
T, save, load), torch.compile(dynamic=True), whole-module torch.save / load,
copy.deepcopy, and to_nn_lstm with ONNX export.

The oracle is the same model on nn.LSTM with copied weights, in float64
(float32 where ONNX Runtime runs the model).
"""

import copy

import pytest
import torch
from torch import nn

import rnnkernels
from conftest import assert_close_all, requires_extension

pytestmark = [requires_extension, pytest.mark.usefixtures("one_thread")]

I, H, CLASSES = 4, 5, 3  # noqa: E741
STACK = dict(num_layers=2, bidirectional=True)
F64 = dict(rtol=1e-9, atol=1e-10)
F32 = dict(rtol=1e-5, atol=1e-5)


class Tagger(nn.Module):
    """An LSTM and a per-step linear head: (T, B, I) features to (T, B, CLASSES) logits."""

    def __init__(self, lstm):
        super().__init__()
        self.lstm = lstm
        width = (lstm.proj_size or lstm.hidden_size) * (2 if lstm.bidirectional else 1)
        self.head = nn.Linear(width, CLASSES, dtype=lstm.weight_ih_l0.dtype)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.head(y)


def model_and_oracle(dtype=torch.float64, **kwargs):
    """A Tagger on rnnkernels.LSTM and the same Tagger on nn.LSTM with its weights."""
    torch.manual_seed(0)
    model = Tagger(rnnkernels.LSTM(I, H, dtype=dtype, **STACK, **kwargs))
    oracle = Tagger(nn.LSTM(I, H, dtype=dtype, **STACK))
    oracle.load_state_dict(model.state_dict())
    return model, oracle


def features(T, B=3, dtype=torch.float64, seed=0):
    return torch.randn(T, B, I, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def lstm_calls(program):
    return [n for n in program.graph.nodes if n.target == torch.ops.rnnkernels.lstm.default]


def test_export_with_dynamic_time_saves_loads_and_matches_nn_lstm(tmp_path):
    model, oracle = model_and_oracle()
    model.eval()
    x = features(7)
    path = str(tmp_path / "tagger.pt2")

    T = torch.export.Dim("T")
    # The whole stack is one call of the public op, which decides when it runs
    # whether to keep anything for a backward (under no_grad it keeps nothing).
    program = torch.export.export(model, (x,), dynamic_shapes={"x": {0: T}})
    torch.export.save(program, path)

    loaded = torch.export.load(path)  # needs `import rnnkernels` first: the graph calls its op
    assert len(lstm_calls(loaded)) == 1
    with torch.no_grad():
        for t in (1, 4, 12):
            x = features(t, seed=t)
            out = loaded.module()(x)
            torch.testing.assert_close(out, oracle(x), **F64)
            assert torch.equal(out, program.module()(x))


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # raised inside inductor
def test_compile_dynamic_follows_changing_time_without_recompiling():
    model, oracle = model_and_oracle()
    compiled = torch.compile(model, dynamic=True, fullgraph=True)
    for i, t in enumerate((5, 9, 3)):
        results = []
        # The first call compiles; another length must reuse that graph.
        with torch.compiler.set_stance("fail_on_recompile" if i else "default"):
            for m in (compiled, oracle):
                x = features(t, seed=t).requires_grad_()
                out = m(x)
                results.append([out, *torch.autograd.grad(out.square().sum(), [x, *m.parameters()])])
        assert_close_all(results[0], results[1], **F64)


def test_whole_module_save_and_load_keeps_options_outputs_and_gradients(tmp_path):
    model, oracle = model_and_oracle(backend="fused", window=3)
    path = tmp_path / "tagger.pt"
    torch.save(model, path)
    loaded = torch.load(path, weights_only=False)  # a pickled module, not just weights

    assert type(loaded.lstm) is rnnkernels.LSTM
    assert (loaded.lstm.backend, loaded.lstm.window) == ("fused", 3)
    x = features(6)
    results = []
    for m in (model, loaded):
        out = m(x)
        results.append([out, *torch.autograd.grad(out.square().sum(), list(m.parameters()))])
    assert_close_all(results[1], results[0], rtol=0, atol=0)
    torch.testing.assert_close(results[1][0], oracle(x), **F64)


def test_deepcopy_is_an_independent_model():
    model, oracle = model_and_oracle()
    twin = copy.deepcopy(model)
    x = features(6)
    before = model(x)
    assert torch.equal(twin(x), before)

    with torch.no_grad():
        for m in (twin, oracle):
            m.lstm.weight_hh_l1_reverse.mul_(2)
    out = twin(x)
    torch.testing.assert_close(out, oracle(x), **F64)
    assert not torch.allclose(out, before)
    assert torch.equal(model(x), before)

    out.sum().backward()
    assert all(p.grad is not None for p in twin.parameters())
    assert all(p.grad is None for p in model.parameters())


CONFIGS = [dict(), dict(num_layers=3, bidirectional=True, proj_size=2, batch_first=True, bias=False, dropout=0.25)]
OPTIONS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional", "proj_size")


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("training", [True, False])
def test_to_nn_lstm_of_one_module_keeps_configuration_weights_and_mode(config, dtype, training):
    torch.manual_seed(0)
    ours = rnnkernels.LSTM(I, H, dtype=dtype, **config).train(training)
    rng = torch.random.get_rng_state()
    plain = rnnkernels.to_nn_lstm(ours)

    assert type(plain) is nn.LSTM and plain.training == training
    assert [getattr(plain, k) for k in OPTIONS] == [getattr(ours, k) for k in OPTIONS]
    assert torch.equal(torch.random.get_rng_state(), rng)  # converting draws no random numbers
    for (name, p), (name_ours, p_ours) in zip(plain.named_parameters(), ours.named_parameters(), strict=True):
        assert name == name_ours and p.dtype == dtype and torch.equal(p, p_ours)
        assert p.data_ptr() != p_ours.data_ptr()  # a copy: the two modules stay independent

    x = torch.randn((2, 5, I) if ours.batch_first else (5, 2, I), dtype=dtype)
    plain.eval(), ours.eval()  # dropout off, so the outputs can be compared
    tol = F64 if dtype == torch.float64 else F32
    (y, (h, c)), (y_ours, (h_ours, c_ours)) = plain(x), ours(x)
    assert_close_all((y, h, c), (y_ours, h_ours, c_ours), **tol)


def test_to_nn_lstm_keeps_the_device():
    plain = rnnkernels.to_nn_lstm(rnnkernels.LSTM(I, H, device="meta"))
    assert all(p.device.type == "meta" for p in plain.parameters())


class TwoHeads(nn.Module):
    """One LSTM held under three names (two here, one inside a container); one frozen weight."""

    def __init__(self):
        super().__init__()
        self.encoder = rnnkernels.LSTM(I, H, dtype=torch.float64)
        self.same_encoder = self.encoder
        self.blocks = nn.Sequential(self.encoder, nn.Identity())
        self.decoder = rnnkernels.LSTM(H, H, dtype=torch.float64)
        self.decoder.weight_hh_l0.requires_grad_(False)

    def forward(self, x):
        y, _ = self.encoder(x)
        return self.decoder(y)[0]


def test_to_nn_lstm_swaps_a_model_in_place():
    torch.manual_seed(0)
    model = TwoHeads().eval()
    x = features(5)
    expected = model(x)

    assert rnnkernels.to_nn_lstm(model) is model
    assert not any(isinstance(m, rnnkernels.LSTM) for m in model.modules())
    assert type(model.encoder) is nn.LSTM
    assert model.same_encoder is model.encoder and model.blocks[0] is model.encoder  # still one module
    assert not model.training and not model.encoder.training
    assert not model.decoder.weight_hh_l0.requires_grad and model.decoder.weight_ih_l0.requires_grad
    torch.testing.assert_close(model(x), expected, **F64)

    rnnkernels.replace_lstm(model)  # and back again
    assert type(model.decoder) is rnnkernels.LSTM
    torch.testing.assert_close(model(x), expected, **F64)


def test_to_nn_lstm_refuses_a_window_and_leaves_the_model_as_it_was():
    model = TwoHeads()
    model.decoder.window = 4
    with pytest.raises(ValueError, match=r"window=4 .* no TBPTT window; set its window to 0 first"):
        rnnkernels.to_nn_lstm(model)
    assert type(model.encoder) is rnnkernels.LSTM  # nothing swapped before the refusal
    model.decoder.window = 0
    rnnkernels.to_nn_lstm(model)
    assert type(model.decoder) is nn.LSTM


def onnx_model_and_inputs():
    model, _ = model_and_oracle(dtype=torch.float32)
    return model.eval(), features(7, dtype=torch.float32)


def assert_standard_onnx_lstm(onnx, path):
    ops = {(node.domain, node.op_type) for node in onnx.load(path).graph.node}
    assert ("", "LSTM") in ops
    assert {domain for domain, _ in ops} <= {"", "ai.onnx"}, ops  # nothing from rnnkernels


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore:Exporting a model to ONNX with a batch_size other than 1")
def test_onnx_export_through_to_nn_lstm_with_dynamic_time(tmp_path):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    model, x = onnx_model_and_inputs()
    path = str(tmp_path / "tagger.onnx")

    plain = rnnkernels.to_nn_lstm(copy.deepcopy(model))
    torch.onnx.export(
        plain, (x,), path, dynamo=False, input_names=["x"], output_names=["logits"],
        dynamic_axes={"x": {0: "T"}, "logits": {0: "T"}},
    )  # fmt: skip
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])

    assert_standard_onnx_lstm(onnx, path)
    with torch.no_grad():
        for t in (1, 4, 13):
            x = features(t, dtype=torch.float32, seed=t)
            (logits,) = session.run(None, {"x": x.numpy()})
            torch.testing.assert_close(torch.from_numpy(logits), model(x), **F32)


@pytest.mark.filterwarnings("ignore:The tensor attributes self.lstm._flat_weights")  # nn.LSTM under torch.export
@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch's own deprecations inside the exporter
def test_onnx_dynamo_export_through_to_nn_lstm_at_the_traced_length(tmp_path):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")  # the dynamo exporter translates through it
    model, x = onnx_model_and_inputs()
    path = str(tmp_path / "tagger.onnx")

    plain = rnnkernels.to_nn_lstm(copy.deepcopy(model))
    # torch.export fixes nn.LSTM's T to the example's, so this model takes only that length.
    torch.onnx.export(plain, (x,), path, dynamo=True, verbose=False)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])

    assert_standard_onnx_lstm(onnx, path)
    (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), model(x), **F32)
