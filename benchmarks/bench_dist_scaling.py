"""Scaling: samples/s of the quickstart CNN with 1 vs 2 processes (1 thread each) at the
same global batch, for ddp and fsdp; efficiency = (2-process samples/s) / (2 x 1-process).

Each configuration trains ``--steps`` optimizer steps (after 3 warm-up steps) on the
8x8 digits through the Trainer; the 1-process reference uses the ``single`` strategy.
The machine is shared: absolute numbers move with its load, the ratios less so.

    python benchmarks/bench_dist_scaling.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch.nn import functional as F

from deepseek.distributed.bench_utils import is_worker, run_workers, save_result

GLOBAL_BATCH = 64


def samples_per_s(strategy: str, steps: int, world: int) -> float:
    sys.path.insert(0, "examples")
    from quickstart import SmallCNN, digits

    import deepseek as ds
    from deepseek.callbacks import Callback

    class Clock(Callback):
        def __init__(self) -> None:
            self.start = None

        def on_train_batch_end(self, trainer, outputs, batch, batch_idx) -> None:
            if trainer.global_step == 3 and self.start is None:
                self.start = time.perf_counter()

    clock = Clock()
    torch.manual_seed(0)
    trainer = ds.Trainer(
        SmallCNN(), torch.optim.AdamW, optimizer_kwargs={"lr": 3e-3}, train_data=digits("train"),
        batch_size=GLOBAL_BATCH // world, loss_fn=F.cross_entropy, strategy=strategy,
        max_steps=steps + 3, seed=0, enable_progress_bar=False, default_root_dir=None,
        callbacks=[clock],
    )  # fmt: skip
    trainer.fit()
    return steps * GLOBAL_BATCH / (time.perf_counter() - clock.start)


def worker(steps: int) -> None:
    torch.set_num_threads(1)
    import deepseek.distributed as ddist

    ddist.init_process_group("gloo")
    save_result({s: samples_per_s(s, steps, ddist.get_world_size()) for s in ("ddp", "fsdp")})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    steps = args.steps or (10 if args.quick else 40)
    if is_worker():
        worker(steps)
        return
    torch.set_num_threads(1)
    single = samples_per_s("single", steps, 1)
    one = run_workers(__file__, 1, ["--steps", str(steps)])[0]
    two = run_workers(__file__, 2, ["--steps", str(steps)])[0]
    print(f"quickstart CNN, global batch {GLOBAL_BATCH}, {steps} steps, 1 thread per process")
    print("| strategy | 1 process (samples/s) | 2 processes (samples/s) | speed-up | efficiency |")
    print("|---|---|---|---|---|")
    print(f"| single (reference) | {single:.0f} | | | |")
    for name in ("ddp", "fsdp"):
        speedup = two[name] / one[name]
        print(f"| {name} | {one[name]:.0f} | {two[name]:.0f} | {speedup:.2f}x | "
              f"{100 * speedup / 2:.0f}% |")  # fmt: skip


if __name__ == "__main__":
    main()
