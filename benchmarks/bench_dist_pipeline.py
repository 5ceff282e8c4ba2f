"""Pipeline bubble: the idle fraction of each stage measured for GPipe and 1F1B with 2
stages and 4/8 microbatches, against the theory (p-1)/(m+p-1).

Each stage's layer sleeps a fixed time per microbatch (forward ``--ms`` ms, backward
twice that), so the step time reflects the schedule rather than this shared CPU's load:
bubble = 1 - (busy time of a stage) / (step time), with busy = m x 3 x ms.

    python benchmarks/bench_dist_pipeline.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from deepseek.distributed.bench_utils import is_worker, run_workers, save_result


class Sleep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, seconds):
        ctx.seconds = seconds
        time.sleep(seconds)
        return x * 1.0

    @staticmethod
    def backward(ctx, grad):
        time.sleep(2 * ctx.seconds)
        return grad, None


class SleepLayer(nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(8))
        self.seconds = seconds

    def forward(self, x):
        return Sleep.apply(x * self.weight, self.seconds)


def worker(ms: float, repeats: int) -> None:
    import deepseek.distributed as ddist

    ddist.init_process_group("gloo")
    result = {}
    for schedule in ("gpipe", "1f1b"):
        for m in (4, 8):
            model = nn.Sequential(SleepLayer(ms / 1000), SleepLayer(ms / 1000))
            pipe = ddist.PipelineParallel(model, num_microbatches=m, schedule=schedule)
            x, y = torch.randn(m * 2, 8), torch.randn(m * 2, 8)
            loss = nn.functional.mse_loss
            pipe.step(x, target=y, loss_fn=loss)  # warm-up (shape inference)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                pipe.step(x, target=y, loss_fn=loss)
                times.append(time.perf_counter() - start)
            step = min(times)
            result[(schedule, m)] = 1 - (m * 3 * ms / 1000) / step
    save_result({f"{k[0]}/{k[1]}": v for k, v in result.items()})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ms", type=float, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    ms = args.ms or (10.0 if args.quick else 20.0)
    repeats = args.repeats or (2 if args.quick else 5)
    if is_worker():
        worker(ms, repeats)
        return
    ranks = run_workers(__file__, 2, ["--ms", str(ms), "--repeats", str(repeats)])
    p = 2
    print(f"2 stages, forward {ms:g} ms / backward {2 * ms:g} ms per microbatch per stage")
    print(
        "| schedule | microbatches | measured bubble (stage 0 / 1) | theory (p-1)/(m+p-1) | ratio |"
    )
    print("|---|---|---|---|---|")
    for key in ranks[0]:
        schedule, m = key.split("/")
        theory = (p - 1) / (int(m) + p - 1)
        measured = [r[key] for r in ranks]
        print(f"| {schedule} | {m} | {measured[0]:.3f} / {measured[1]:.3f} | {theory:.3f} | "
              f"{max(measured) / theory:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
