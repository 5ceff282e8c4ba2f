"""Expert-load balance of the MoE language model: auxiliary-loss-free balancing vs the
Switch auxiliary loss vs no balancing, with the validation perplexity of each (issue 10).

    python benchmarks/bench_moe_balance.py            # 300 steps per run
    python benchmarks/bench_moe_balance.py --quick    # 40 steps per run

Same data (the standard library's source, byte-level), same initialisation and batches
for the three runs; the model is the example's (examples/moe_lm.yaml) at a smaller width.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import deepseek as ds
from deepseek.callbacks import Callback
from deepseek.moe.balancing import MoELoadBalancing, moe_layers
from deepseek.moe.data import stdlib_text
from deepseek.moe.models import MoETransformerLM


class LoadRecorder(Callback):
    """Per optimizer step: the max/mean load ratio of each MoE layer (averaged over layers)
    and the summed per-expert load of the last ``window`` steps."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.ratios: list[float] = []
        self.loads: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, outputs, batch, batch_idx) -> None:
        layers = [m for _, m in moe_layers(trainer.unwrapped_model)]
        self.ratios.append(float(torch.stack([m.load_ratio for m in layers]).mean()))
        self.loads.append(torch.stack([m.expert_load for m in layers]))
        self.loads = self.loads[-self.window :]

    def summary(self) -> tuple[float, float, float]:
        tail = self.ratios[len(self.ratios) // 2 :]
        total = torch.stack(self.loads).sum(0)  # (layers, experts) over the window
        aggregate = float((total.max(1).values / total.mean(1)).mean())
        return sum(tail) / len(tail), max(tail), aggregate


def run(mode: str, steps: int, args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(0)
    options = {
        "none": {"aux_loss_coef": 0.0},
        "aux loss (0.01)": {"aux_loss_coef": 0.01},
        "aux-loss-free (bias rate 1e-3)": {"aux_loss_coef": 0.0},
        "aux-loss-free (bias rate 1e-2)": {"aux_loss_coef": 0.0},
    }[mode]
    model = MoETransformerLM(
        d_model=args.d_model,
        n_layers=3,
        n_heads=4,
        max_seq_len=args.seq_len,
        num_experts=16,
        top_k=2,
        num_shared_experts=1,
        moe_d_hidden=32,
        dense_d_hidden=256,
        score_func="sigmoid",
        normalize_weights=True,
        **options,
    )
    rate = {"aux-loss-free (bias rate 1e-3)": 1e-3, "aux-loss-free (bias rate 1e-2)": 1e-2}.get(
        mode, 0.0
    )
    recorder = LoadRecorder(window=max(steps // 5, 1))
    train = stdlib_text("train", args.seq_len, max_bytes=400_000)
    val = stdlib_text("val", args.seq_len, max_bytes=400_000, max_windows=64)
    trainer = ds.Trainer(
        model,
        torch.optim.AdamW,
        optimizer_kwargs={"lr": 3e-3},
        train_data=train,
        val_data=val,
        batch_size=16,
        max_steps=steps,
        seed=0,
        callbacks=[MoELoadBalancing(bias_update_rate=rate, plot=False), recorder],
        enable_progress_bar=False,
        default_root_dir=None,
        val_every_n_epochs=None,
    )
    start = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - start
    val_loss = trainer.validate()["val_loss"]
    mean_ratio, worst_ratio, aggregate = recorder.summary()
    return {
        "mean": mean_ratio,
        "worst": worst_ratio,
        "aggregate": aggregate,
        "ppl": math.exp(val_loss),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps or (40 if args.quick else 300)
    args.d_model, args.seq_len = 64, 64
    modes = [
        "none",
        "aux loss (0.01)",
        "aux-loss-free (bias rate 1e-3)",
        "aux-loss-free (bias rate 1e-2)",
    ]
    results = {mode: run(mode, steps, args) for mode in modes}
    print(
        f"\nMoE LM balance over {steps} steps (16 routed experts top-2 + 1 shared, 2 MoE "
        f"layers, d_model {args.d_model}, batch 16 x {args.seq_len} bytes of stdlib source; "
        f"{torch.get_num_threads()} thread(s))\n"
    )
    print(
        "| balancing | max/mean load per step (2nd half, mean) | worst step | max/mean load, "
        "last 20% of steps summed | val perplexity | train s |"
    )
    print("|---|---|---|---|---|---|")
    for mode, r in results.items():
        print(
            f"| {mode} | {r['mean']:.2f} | {r['worst']:.2f} | {r['aggregate']:.3f} | "
            f"{r['ppl']:.2f} | {r['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
