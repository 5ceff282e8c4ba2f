"""Trainer overhead: steps/s of ``Trainer.fit`` against a hand-written PyTorch loop.

A small MLP on in-memory data, where framework overhead shows. Also PyTorch Lightning's
Trainer on the same work when ``lightning`` is installed. Each contender runs
``--repeats`` times, alternating, and the best time counts (least noise on a shared CPU).
Time is this process's CPU time (``time.process_time``) with ``--threads`` torch threads
(default 1), which other processes on a loaded machine disturb far less than wall time.

    python benchmarks/bench_trainer_overhead.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from deepseek.training import Trainer


def make(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)
    )
    x = torch.randn(4096, 32)
    data = TensorDataset(x, (x[:, :4].argmax(1)))
    return model, data


def hand_loop(steps_per_epoch_batch: int, epochs: int) -> float:
    model, data = make()
    loader = DataLoader(data, batch_size=steps_per_epoch_batch, shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    start = time.process_time()
    for _ in range(epochs):
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return time.process_time() - start


def deepseek_fit(batch: int, epochs: int) -> float:
    model, data = make()
    trainer = Trainer(
        model,
        torch.optim.SGD,
        {"lr": 0.01},
        train_data=DataLoader(data, batch_size=batch, shuffle=True),
        loss_fn=nn.functional.cross_entropy,
        max_epochs=epochs,
        precision="fp32",
        enable_progress_bar=False,
        default_root_dir=None,
        seed=0,
    )
    start = time.process_time()
    trainer.fit()
    return time.process_time() - start


def lightning_fit(batch: int, epochs: int) -> float | None:
    try:
        import lightning as L
    except ImportError:
        return None

    model, data = make()

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model

        def training_step(self, b, i):
            x, y = b
            return nn.functional.cross_entropy(self.model(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.process_time()
        trainer.fit(Module(), DataLoader(data, batch_size=batch, shuffle=True))
        return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch, epochs = 32, (2 if args.quick else 5)
    repeats = 3 if args.quick else args.repeats
    steps = epochs * (4096 // batch)
    contenders = {"hand-written loop": hand_loop, "deepseek Trainer": deepseek_fit}
    contenders["lightning Trainer"] = lightning_fit
    best: dict[str, float | None] = {name: None for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            seconds = fn(batch, epochs)
            if seconds is not None:
                best[name] = seconds if best[name] is None else min(best[name], seconds)
    ref = best["hand-written loop"]
    print(f"\nTrainer overhead: MLP 32-64-64-4, batch {batch}, {steps} steps, best of {repeats}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| loop | steps per CPU-second | time ratio vs hand-written (lower is better) |")
    print("|---|---|---|")
    for name, seconds in best.items():
        if seconds is None:
            print(f"| {name} | not installed | - |")
        else:
            print(f"| {name} | {steps / seconds:,.0f} | {seconds / ref:.3f} |")


if __name__ == "__main__":
    main()
