"""Dynamic int8 quantization: real int8 weights and kernels, outputs close to fp32."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as qdynamic

from deepseek.plugins import registry
from deepseek.quantization import PostTrainingQuantization, quantize_dynamic_int8


def make_mlp(width: int = 64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(32, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    ).eval()


def serialized_size(model: nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def test_int8_outputs_are_close_to_fp32() -> None:
    model = make_mlp()
    x = torch.randn(256, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(x)
        actual = quantize_dynamic_int8(model)(x)
    # Measured on this model: relative error ~0.02, max abs error ~0.008 (|outputs| <= 0.36).
    relative = (actual - expected).norm() / expected.norm()
    assert relative < 0.05
    assert (actual - expected).abs().max() < 0.05 * expected.abs().max()
    # The same predictions for nearly every sample.
    assert (actual.argmax(1) == expected.argmax(1)).float().mean() > 0.95


def test_quantized_layers_hold_int8_weights() -> None:
    model = make_mlp()
    qmodel = quantize_dynamic_int8(model)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    quantized = [m for m in qmodel if isinstance(m, qdynamic.Linear)]
    assert len(quantized) == len(linears) == 3
    for float_layer, int8_layer in zip(linears, quantized):
        assert int8_layer._packed_params.dtype == torch.qint8
        weight = int8_layer.weight()
        assert weight.dtype == torch.qint8
        assert torch.int_repr(weight).dtype == torch.int8
        # Each int8 weight is the float weight rounded to the quantization grid.
        error = (weight.dequantize() - float_layer.weight.detach()).abs().max()
        assert error <= weight.q_scale() / 2 + 1e-6
    assert not any(isinstance(m, nn.Linear) for m in qmodel.modules())


def test_int8_model_is_smaller_when_serialized() -> None:
    model = make_mlp(width=256)
    fp32_bytes, int8_bytes = serialized_size(model), serialized_size(quantize_dynamic_int8(model))
    assert int8_bytes < 0.35 * fp32_bytes  # int8 weights are a quarter of fp32


def test_the_float_model_is_left_unchanged() -> None:
    model = make_mlp().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qmodel = quantize_dynamic_int8(model)
    assert model.training and not qmodel.training
    assert all(isinstance(model[i], nn.Linear) for i in (0, 2, 4))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_no_deprecation_warning_reaches_the_caller() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quantize_dynamic_int8(make_mlp())(torch.randn(2, 32))


def test_modules_selects_what_is_quantized() -> None:
    torch.manual_seed(0)
    model = nn.ModuleDict({"rnn": nn.LSTM(8, 16, batch_first=True), "head": nn.Linear(16, 4)})
    qmodel = quantize_dynamic_int8(model, modules=["lstm"])
    assert isinstance(qmodel["rnn"], qdynamic.LSTM)
    assert type(qmodel["head"]) is nn.Linear
    x = torch.randn(2, 5, 8)
    with torch.inference_mode():
        expected, actual = model["rnn"](x)[0], qmodel["rnn"](x)[0]
    assert (actual - expected).abs().max() < 0.05 * expected.abs().max()


def test_bad_input_gives_one_clear_error() -> None:
    with pytest.raises(ValueError, match="supported module types: Linear, LSTM"):
        quantize_dynamic_int8(make_mlp(), modules=(nn.Conv2d,))
    with pytest.raises(ValueError, match="no Linear submodule"):
        quantize_dynamic_int8(nn.Sequential(nn.ReLU()))
    with pytest.raises(TypeError, match=r"call model.float\(\) first"):
        quantize_dynamic_int8(make_mlp().double())
    with pytest.raises(TypeError, match="torch.nn.Module"):
        quantize_dynamic_int8(lambda x: x)
    with pytest.raises(ValueError, match="modules is empty"):
        PostTrainingQuantization(modules=())


def test_ptq_algorithm_from_the_registry() -> None:
    ptq = registry("algorithm").create("ptq", modules=["Linear"])
    assert isinstance(ptq, PostTrainingQuantization)
    qmodel = ptq.apply(make_mlp())
    assert sum(isinstance(m, qdynamic.Linear) for m in qmodel.modules()) == 3


def test_dynamic_int8_model_saves_and_loads_safely(tmp_path) -> None:
    """Issue 14: a dynamic-int8 model could not be saved (packed params are no tensors)."""
    from safetensors import safe_open

    from deepseek.quantization import load_dynamic_int8, quantize_dynamic_int8, save_dynamic_int8

    def build() -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 4)
        )

    torch.manual_seed(0)
    qmodel = quantize_dynamic_int8(build())
    path = save_dynamic_int8(qmodel, tmp_path / "model.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("0.weight.int8").dtype == torch.int8
    restored = load_dynamic_int8(path, build())
    x = torch.randn(3, 16)
    assert torch.equal(restored(x), qmodel(x))
    with pytest.raises(ValueError, match="no Linear layer"):
        load_dynamic_int8(path, torch.nn.Sequential(torch.nn.Linear(16, 4)))


def test_report_warns_when_int8_is_slower_for_small_layers() -> None:
    """Issue 14: int8 was silently slower than fp32 for small layers (width 64)."""
    from deepseek.quantization import quantization_report, quantize_dynamic_int8

    torch.set_num_threads(1)
    tiny = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = quantization_report(tiny, quantize_dynamic_int8(tiny), torch.randn(1, 4))
    slower = report.int8_ms >= report.fp32_ms
    warned = any("int8 measured slower" in str(w.message) for w in caught)
    assert warned == slower  # the warning follows the measurement, whichever way it went
    assert report.int8_bytes < report.fp32_bytes
