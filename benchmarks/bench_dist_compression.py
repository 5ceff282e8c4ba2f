"""Gradient compression: bytes handed to the collective per DDP step, and accuracy.

2 gloo processes. Bytes: a ~10M-parameter MLP (4 x Linear(1600, 1600)), per step after
PowerSGD's warm-up, for uncompressed DDP (the reference), fp16 and PowerSGD rank 1/2/4
(counted by deepseek's hook wrapper: the tensors each hook passes to all_reduce).
Accuracy: the quickstart CNN on the 8x8 digits, DDP with each compression, final
validation accuracy (``--quick``: fewer epochs).

    python benchmarks/bench_dist_compression.py [--quick]
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn
from torch.nn import functional as F

from deepseek.distributed.bench_utils import is_worker, run_workers, save_result

SETTINGS = {
    "none (DDP)": "none",
    "fp16": "fp16",
    "powersgd rank 1": {"name": "powersgd", "rank": 1, "warmup_steps": 2},
    "powersgd rank 2": {"name": "powersgd", "rank": 2, "warmup_steps": 2},
    "powersgd rank 4": {"name": "powersgd", "rank": 4, "warmup_steps": 2},
}


def worker(epochs: int) -> None:
    torch.set_num_threads(1)
    sys.path.insert(0, "examples")
    from quickstart import SmallCNN, digits

    import deepseek as ds
    import deepseek.distributed as ddist

    ddist.init_process_group("gloo")
    result = {}
    for label, spec in SETTINGS.items():
        strategy = ddist.DDPStrategy(gradient_compression=spec)
        strategy.setup(ds.backends.get("cpu"))
        torch.manual_seed(0)
        model = strategy.setup_model(nn.Sequential(*[nn.Linear(1600, 1600) for _ in range(4)]))
        if label.startswith("none"):
            strategy.compression.register(model)
        params = sum(p.numel() for p in model.parameters())
        for _ in range(3):
            model(torch.randn(4, 1600)).square().mean().backward()
        steps = strategy.compression.bytes_per_step
        # accuracy on the quickstart job with this compression
        acc_strategy = ddist.DDPStrategy(gradient_compression=spec)
        torch.manual_seed(0)
        trainer = ds.Trainer(
            SmallCNN(), torch.optim.AdamW, optimizer_kwargs={"lr": 3e-3},
            train_data=digits("train"), val_data=digits("val"), batch_size=16,
            loss_fn=F.cross_entropy, metrics=["accuracy"], strategy=acc_strategy,
            max_epochs=epochs, seed=0, enable_progress_bar=False, default_root_dir=None,
        )  # fmt: skip
        trainer.fit()
        result[label] = {"params": params, "bytes": steps[-1],
                         "accuracy": float(trainer.metrics["val_accuracy"])}  # fmt: skip
    save_result(result)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    epochs = args.epochs or (1 if args.quick else 4)
    if is_worker():
        worker(epochs)
        return
    result = run_workers(__file__, 2, ["--epochs", str(epochs)])[0]
    base = result["none (DDP)"]
    print(f"model: {base['params'] / 1e6:.1f}M parameters, 2 gloo ranks; accuracy: quickstart "
          f"CNN, {epochs} epoch(s), global batch 32")  # fmt: skip
    print("| compression | bytes / step | vs DDP | fewer bytes | val accuracy | vs DDP (pts) |")
    print("|---|---|---|---|---|---|")
    for label, r in result.items():
        ratio = r["bytes"] / base["bytes"]
        delta = 100 * (r["accuracy"] - base["accuracy"])
        print(f"| {label} | {r['bytes']:,} | {ratio:.4f}x | {100 * (1 - ratio):.1f}% | "
              f"{100 * r['accuracy']:.1f}% | {delta:+.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
