"""Quantization-aware training, static PTQ and the real int8 model (torchao PT2E)."""

from __future__ import annotations

import copy
import subprocess
import sys
import zipfile

import pytest
import torch
from torch import nn

import deepseek as ds
from deepseek.quantization import (
    Int8Model,
    QuantConfig,
    QuantizedModel,
    calibrate,
    convert,
    load,
    quantize_model,
    save,
)


class ResidualCNN(nn.Module):
    """Conv + batch norm + residual add + pooling + linear: the layers QAT must handle."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.stem(x)))
        y = y + torch.relu(self.bn2(self.conv(y)))
        return self.head(self.pool(y).flatten(1))


class ResidualMLP(nn.Module):
    """Linear layers, layer norm and a residual add: quick to prepare (QAT's conv + batch
    norm folding exports dozens of pattern graphs, so only a few tests pay for it)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(64, 32)
        self.norm = nn.LayerNorm(32)
        self.hidden = nn.Linear(32, 32)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.inp(x.flatten(1)))
        y = y + torch.relu(self.hidden(self.norm(y)))
        return self.head(y)


def _data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + 2 * (x[:, 0, :4].mean(dim=(1, 2)) > 0).long()
    return x, y


def _train(model: nn.Module, steps: int = 30) -> None:
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for i in range(steps):
        idx = slice((i * 16) % 64, (i * 16) % 64 + 16)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_snippet_as_written_trains_and_converts() -> None:
    torch.manual_seed(0)
    model = ResidualCNN()
    from deepseek.quantization import QuantConfig

    config = QuantConfig(weight_bits=8, activation_bits=8, quant_scheme="symmetric")
    quant_model = ds.quantization.quantize_model(model, config)
    assert isinstance(quant_model, QuantizedModel)
    before = copy.deepcopy(model.state_dict())
    _train(quant_model)
    # The user's model is not modified (inplace=False is the default).
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    quant_model.eval()
    x, _ = _data(64, seed=1)
    with torch.no_grad():
        fake = quant_model(x)
    int8 = convert(quant_model, compiled=False)
    with torch.no_grad():
        real = int8(x)
    agreement = (fake.argmax(1) == real.argmax(1)).float().mean().item()
    assert agreement >= 0.99
    assert torch.allclose(fake, real, atol=0.1)


def test_inplace_trains_the_users_parameters() -> None:
    model = ResidualMLP()
    before = model.head.weight.detach().clone()
    quant_model = quantize_model(model, QuantConfig(), inplace=True)
    _train(quant_model, steps=3)
    assert not torch.equal(model.head.weight, before)


def test_fake_quant_rounds_weights_to_the_grid() -> None:
    """With 2-bit weights the fake-quant model's outputs differ clearly from the float
    model's; with 8 bits they stay close: the simulated rounding is really applied."""
    torch.manual_seed(0)
    model = ResidualMLP().eval()
    x, _ = _data(16)
    with torch.no_grad():
        ref = model(x)
    errors = {}
    for bits in (8, 2):
        q = quantize_model(model, QuantConfig(weight_bits=bits, activation_bits=8))
        q.train()
        with torch.no_grad():
            q(x)  # one step to set the observers' ranges
        q.eval()
        with torch.no_grad():
            errors[bits] = (q(x) - ref).abs().max().item()
    assert errors[8] < 0.1
    assert errors[2] > 3 * errors[8]


def test_state_dict_round_trip_restores_scales() -> None:
    torch.manual_seed(0)
    q = quantize_model(ResidualMLP(), QuantConfig())
    _train(q, steps=5)
    q.eval()
    x, _ = _data(8)
    with torch.no_grad():
        expected = q(x)
    fresh = quantize_model(ResidualMLP(), QuantConfig())
    fresh.load_state_dict(q.state_dict())
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)


def test_qat_trains_with_the_trainer(tmp_path) -> None:
    torch.manual_seed(0)
    x, y = _data()
    q = quantize_model(ResidualMLP(), QuantConfig(), example_inputs=x[:2])
    trainer = ds.Trainer(
        q,
        torch.optim.SGD,
        optimizer_kwargs={"lr": 0.05},
        train_data=torch.utils.data.TensorDataset(x, y),
        batch_size=16,
        loss_fn=nn.functional.cross_entropy,
        max_epochs=2,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
    )
    trainer.fit()
    assert int(q.steps_seen) == 8
    assert isinstance(convert(q, compiled=False), Int8Model)


def test_static_ptq_and_safe_save_load(tmp_path) -> None:
    torch.manual_seed(0)
    model = ResidualCNN().eval()
    x, _ = _data(32)
    calibrated = calibrate(model, [(x[i : i + 8], None) for i in range(0, 32, 8)], num_batches=3)
    assert int(calibrated.steps_seen) == 3
    int8 = convert(calibrated, compiled=False)
    with torch.no_grad():
        ref, out = model(x), int8(x)
    assert (ref.argmax(1) == out.argmax(1)).float().mean() >= 0.9
    path = save(int8, tmp_path / "model.pt2", x[:4])
    loaded = load(path, compiled=False)
    with torch.no_grad():
        assert torch.equal(loaded(x[:5]), int8(x[:5]))

    # int8 weights: the archive is far smaller than the float model's weights would be.
    def nbytes(module: nn.Module) -> int:
        return sum(t.numel() * t.element_size() for t in module.state_dict().values())

    assert any(t.dtype == torch.int8 for t in int8.graph.state_dict().values())
    assert nbytes(int8.graph) < 0.5 * nbytes(model)

    # A deployment process that has imported nothing else loads and runs it (torchao's
    # int8 ops must be registered by load itself), and the archive holds no example batch.
    torch.save(x[:5], tmp_path / "x.pt")
    script = (
        "import sys, torch\n"
        "from deepseek.quantization import load\n"
        "x = torch.load(sys.argv[2], weights_only=True)\n"
        "torch.save(load(sys.argv[1], compiled=False)(x), sys.argv[3])\n"
    )
    args = [path, tmp_path / "x.pt", tmp_path / "y.pt"]
    subprocess.run([sys.executable, "-c", script, *map(str, args)], check=True, timeout=300)
    assert torch.equal(torch.load(tmp_path / "y.pt", weights_only=True), int8(x[:5]))
    with zipfile.ZipFile(path) as archive:
        assert not any(archive.read(n) for n in archive.namelist() if "sample_inputs" in n)


def test_compiled_int8_model_runs_int8_kernels() -> None:
    """The compiled path (inductor with freezing) gives the same predictions."""
    torch.manual_seed(0)
    model = ResidualCNN().eval()
    x, _ = _data(16)
    int8 = convert(calibrate(model, [x]))
    for batch in (x, x[:3]):  # a second batch size recompiles (the int8 conv needs static shapes)
        with torch.no_grad():
            compiled, reference = int8(batch), int8.graph(batch)
        assert torch.allclose(compiled, reference, atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight_bits": 1}, "2 to 8 bits"),
        ({"activation_bits": 16}, "2 to 8 bits"),
        ({"quant_scheme": "log"}, "'symmetric', 'asymmetric'"),
        ({"mode": "int4"}, "'qat', 'static', 'dynamic'"),
        ({"observer": "ema"}, "'moving_average'"),
    ],
)
def test_bad_configs_say_what_is_supported(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        QuantConfig(**kwargs)


def test_convert_before_training_is_a_clear_error() -> None:
    q = quantize_model(ResidualMLP(), QuantConfig())
    with pytest.raises(ValueError, match="never trained or calibrated"):
        convert(q)


def test_low_bit_models_cannot_be_exported_to_int8() -> None:
    q = quantize_model(ResidualMLP(), QuantConfig(weight_bits=4))
    _train(q, steps=1)
    with pytest.raises(ValueError, match="needs 8-bit"):
        convert(q)


def test_skip_pattern_must_match_and_keeps_layers_float() -> None:
    with pytest.raises(ValueError, match="matches no submodule.*head"):
        quantize_model(ResidualMLP(), QuantConfig(skip=["haed"]))
    q = quantize_model(ResidualMLP(), QuantConfig(skip=["head"]), example_inputs=_data(2)[0])
    _train(q, steps=2)
    int8 = convert(q, compiled=False)
    # The skipped head keeps float weights: exactly one float Linear weight remains.
    float_linear = [
        t for k, t in int8.graph.state_dict().items() if t.dtype == torch.float32 and t.dim() == 2
    ]
    assert len(float_linear) == 1


def test_static_mode_points_to_calibrate() -> None:
    with pytest.raises(ValueError, match="calibrate"):
        quantize_model(ResidualMLP(), QuantConfig(mode="static"))


def test_empty_calibration_data() -> None:
    with pytest.raises(ValueError, match="empty"):
        calibrate(ResidualCNN(), [])
