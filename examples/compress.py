"""The compression pipeline on the quickstart task, end to end, with one table at the end.

train the quickstart CNN -> prune 50% of its channels -> distil from the unpruned teacher
(output KL + feature matching) -> quantization-aware training -> convert to real int8.
Every stage reports validation accuracy on the digits, file size and CPU latency.

    python examples/compress.py [--epochs 8] [--output-dir runs/compress]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

import deepseek as ds
from deepseek.distillation import Distillation
from deepseek.pruning import prune
from deepseek.quantization import QuantConfig, convert, quantize_model, save

try:
    from quickstart import SmallCNN, digits
except ImportError:  # run from the repository root
    import sys

    sys.path.append(str(Path(__file__).parent))
    from quickstart import SmallCNN, digits


def accuracy(model: nn.Module, data) -> float:
    images, labels = data.tensors
    model.eval()
    with torch.no_grad():
        return (model(images).argmax(1) == labels).float().mean().item()


def latency_ms(model: nn.Module, repeats: int = 50) -> float:
    x = torch.randn(1, 1, 8, 8)
    with torch.inference_mode():
        for _ in range(5):
            model(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def size_kb(model: nn.Module) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        return path.stat().st_size / 1024


def fit(model: nn.Module, epochs: int, lr: float, out: Path, **kwargs) -> nn.Module:
    ds.Trainer(
        model,
        torch.optim.AdamW,
        {"lr": lr},
        train_data=digits("train"),
        batch_size=32,
        loss_fn=None if hasattr(model, "training_step") else nn.functional.cross_entropy,
        max_epochs=epochs,
        default_root_dir=out,
        enable_progress_bar=False,
        seed=0,
        **kwargs,
    ).fit()
    return model


def main(epochs: int = 8, output_dir: str = "runs/compress") -> list[tuple]:
    out = Path(output_dir)
    val = digits("val")
    rows = []
    ds.seed_everything(0)
    teacher = fit(SmallCNN(channels=32), epochs, 3e-3, out / "teacher")
    rows.append(("fp32 (trained)", accuracy(teacher, val), size_kb(teacher), latency_ms(teacher)))

    pruned = prune(teacher, amount=0.5, example_inputs=torch.randn(1, 1, 8, 8))
    rows.append(("pruned 50%", accuracy(pruned, val), size_kb(pruned), latency_ms(pruned)))

    features = {"features.3": "features.3"}  # second conv: 32 vs 64 channels, 1x1 projection
    distiller = Distillation(teacher, temperature=2.0, alpha=0.5, features=features)
    fit(distiller.apply(pruned), epochs, 2e-3, out / "distil")
    rows.append(("+ distilled", accuracy(pruned, val), size_kb(pruned), latency_ms(pruned)))

    qat = quantize_model(pruned, QuantConfig(weight_bits=8, activation_bits=8))
    fit(qat, max(1, epochs // 4), 5e-4, out / "qat")
    rows.append(("+ QAT (fake quant)", accuracy(qat, val), size_kb(pruned), latency_ms(qat)))

    int8 = convert(qat)
    path = save(int8, out / "model_int8.pt2", torch.randn(2, 1, 8, 8))
    rows.append(
        ("int8 (converted)", accuracy(int8, val), path.stat().st_size / 1024, latency_ms(int8))
    )

    print("\n| stage | val accuracy | file size (KB) | CPU latency, batch 1 (ms) |")
    print("|---|---|---|---|")
    for stage, acc, kb, ms in rows:
        print(f"| {stage} | {100 * acc:.2f}% | {kb:.1f} | {ms:.3f} |")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--output-dir", default="runs/compress")
    args = parser.parse_args()
    main(args.epochs, args.output_dir)
