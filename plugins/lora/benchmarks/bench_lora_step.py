"""How much does a deepseek-lora training step cost, against full fine-tuning and peft?

One question: the time of a training step (forward, backward, AdamW step) and of eval
inference, for full fine-tuning, deepseek-lora, Hugging Face peft's LoRA (the peer), and
the merged model, on the same attention classifier, measured in the same run. Prints a
markdown table with ratios against full fine-tuning.

    python plugins/lora/benchmarks/bench_lora_step.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.append(str(Path(__file__).resolve().parents[1] / "examples"))
from deepseek_lora import Lora, merge
from tiny_job import TinyClassifier


def model(dim: int, layers: int) -> nn.Module:
    torch.manual_seed(0)
    return TinyClassifier(features=dim, dim=dim, layers=layers)


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median milliseconds of each function, timed in alternating rounds."""
    for fn in fns.values():
        fn(), fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def step_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor):
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    m.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()

    return step, sum(p.numel() for p in params)


def infer_fn(m: nn.Module, x: torch.Tensor):
    m.eval()

    def infer() -> None:
        with torch.no_grad():
            m(x)

    return infer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller model, fewer repeats")
    args = parser.parse_args()
    dim, layers, batch, seq, repeats = (128, 2, 16, 32, 5) if args.quick else (512, 4, 32, 64, 10)
    torch.set_num_threads(1)
    x = torch.randn(batch, seq, dim, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 2, (batch,), generator=torch.Generator().manual_seed(1))
    options = {"rank": 8, "alpha": 16, "target_modules": ["*.query", "*.value"]}
    variants: dict[str, nn.Module] = {"full fine-tune": model(dim, layers)}
    variants["deepseek-lora"] = Lora(**options, trainable=["classifier"]).apply(model(dim, layers))
    try:
        import peft

        config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"],
                                 modules_to_save=["classifier"])  # fmt: skip
        variants["peft LoRA (peer)"] = peft.get_peft_model(model(dim, layers), config)
    except ImportError:
        print("peft not installed: its row is skipped (pip install peft)")
    steps = {name: step_fn(m, x, y) for name, m in variants.items()}
    # Interleaved rounds: every variant sees the same machine load (other jobs share it).
    step_ms = interleaved({name: fn for name, (fn, _) in steps.items()}, repeats)
    merged = merge(Lora(**options).apply(model(dim, layers)))
    variants["deepseek-lora merged"] = merged
    infer_ms = interleaved({name: infer_fn(m, x) for name, m in variants.items()}, repeats)
    rows = [
        (name, steps[name][1] if name in steps else 0, step_ms.get(name, float("nan")),
         infer_ms[name])
        for name in variants
    ]  # fmt: skip
    base_step, base_infer = rows[0][2], rows[0][3]
    print(f"\nattention classifier dim={dim} layers={layers}, batch {batch}x{seq}, "
          f"1 thread, median of {repeats}\n")  # fmt: skip
    print("| variant | trainable params | train step ms | vs full | eval ms | vs full |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, params, step_ms, infer_ms in rows:
        trained = step_ms == step_ms  # the merged model is for export: eval only
        step_cell = f"{step_ms:.2f} | {step_ms / base_step:.2f}x" if trained else "- | -"
        params_cell = f"{params:,}" if trained else "-"
        print(f"| {name} | {params_cell} | {step_cell} | {infer_ms:.2f} | "
              f"{infer_ms / base_infer:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
