"""Eager vs ``ds.compile`` step time for a small transformer on CPU.

Measures a training step (forward + backward + optimizer step) and an inference step
(``torch.inference_mode`` forward) with the eager model as the reference, in the same
run. Compilation (the first calls) is timed separately and excluded from step times;
eager and compiled steps alternate so both see the same load on a shared machine.

    python benchmarks/bench_compile.py            # full run
    python benchmarks/bench_compile.py --quick    # a short run
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import deepseek as ds


class TinyTransformer(nn.Module):
    def __init__(self, vocab: int, d_model: int, layers: int, seq: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.zeros(seq, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, nhead=4, dim_feedforward=4 * d_model, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens) + self.pos))


class Setup:
    """One model (eager or compiled) with its own optimizer and step functions."""

    def __init__(self, model: nn.Module, runner: Callable[..., torch.Tensor], data) -> None:
        self.model, self.runner, (self.tokens, self.targets) = model, runner, data
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        self.loss_fn = nn.CrossEntropyLoss()

    def train_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.runner(self.tokens)
        self.loss_fn(logits.flatten(0, 1), self.targets.flatten()).backward()
        self.optimizer.step()

    def infer_step(self) -> None:
        with torch.inference_mode():
            self.runner(self.tokens)

    def first_calls(self, warmup: int) -> float:
        """Seconds for the first train and inference calls (compilation happens here)."""
        start = time.perf_counter()
        self.model.train()
        for _ in range(warmup):
            self.train_step()
        self.model.eval()
        for _ in range(warmup):
            self.infer_step()
        return time.perf_counter() - start


def interleaved_ms(setups: list[Setup], step: str, repeats: int) -> list[float]:
    """Median ms per setup; steps alternate so every setup sees the same machine load."""
    times: list[list[float]] = [[] for _ in setups]
    for _ in range(repeats):
        for setup, bucket in zip(setups, times):
            start = time.perf_counter()
            getattr(setup, step)()
            bucket.append(time.perf_counter() - start)
    return [1000 * statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, smaller model")
    opts = parser.parse_args()
    layers, d_model, repeats = (2, 128, 5) if opts.quick else (4, 256, 20)
    batch, seq, vocab, warmup = 16, 64, 1000, 2

    torch.manual_seed(0)
    tokens = torch.randint(vocab, (batch, seq))
    targets = torch.randint(vocab, (batch, seq))
    setups = []
    for name in ("eager", "ds.compile"):
        torch.manual_seed(0)
        model = TinyTransformer(vocab, d_model, layers, seq)
        runner = model if name == "eager" else ds.compile(model)
        setups.append(Setup(model, runner, (tokens, targets)))
    first = [setup.first_calls(warmup) for setup in setups]
    for setup in setups:
        setup.model.train()
    train = interleaved_ms(setups, "train_step", repeats)
    for setup in setups:
        setup.model.eval()
    infer = interleaved_ms(setups, "infer_step", repeats)
    rows = list(zip(("eager", "ds.compile"), first, train, infer))

    _, eager_train, eager_infer = rows[0][1:]
    print(
        f"\n{layers}x TransformerEncoderLayer, d_model {d_model}, batch {batch}, seq {seq}, "
        f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"median of {repeats} interleaved steps\n"
    )
    print(
        "| mode | first calls (s) | train step (ms) | vs eager | inference step (ms) | vs eager |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, first_s, train_ms, infer_ms in rows:
        print(
            f"| {name} | {first_s:.1f} | {train_ms:.1f} | {eager_train / train_ms:.2f}x "
            f"| {infer_ms:.1f} | {eager_infer / infer_ms:.2f}x |"
        )
    print("\nvs eager = eager time / this time (>1 is faster). First calls include compilation.")


if __name__ == "__main__":
    main()
