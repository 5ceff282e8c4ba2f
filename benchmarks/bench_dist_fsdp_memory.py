"""FSDP: per-rank parameter + gradient + optimizer-state memory with 2 ranks vs 1.

A ~10M-parameter stack of blocks (``--quick``: ~2M) trained one AdamW step under the
``fsdp`` strategy; the bytes each rank holds are counted from its tensors (local shards
of the DTensors). The reference is the same model and optimizer in one process. Also
shows the planner's estimate (``deepseek plan``, meta device) for the same setup.

    python benchmarks/bench_dist_fsdp_memory.py [--quick]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from deepseek.distributed.bench_utils import is_worker, run_workers, save_result


def make_model(width: int) -> nn.Module:
    blocks = [nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
              for _ in range(4)]  # fmt: skip
    return nn.Sequential(*blocks)


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    def size(t: torch.Tensor) -> int:
        t = t.to_local() if isinstance(t, DTensor) else t
        return t.numel() * t.element_size()

    return {
        "params": sum(size(p) for p in model.parameters()),
        "grads": sum(size(p.grad) for p in model.parameters() if p.grad is not None),
        "optimizer": sum(
            size(v) for s in optimizer.state.values() for k, v in s.items() if k != "step"
        ),  # fmt: skip
    }


def worker(width: int) -> None:
    torch.set_num_threads(1)
    import deepseek as ds
    import deepseek.distributed as ddist

    ddist.init_process_group("gloo")
    strategy = ddist.FSDPStrategy()
    strategy.setup(ds.backends.get("cpu"))
    torch.manual_seed(0)
    model = strategy.setup_model(make_model(width))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, width)).square().mean().backward()
    optimizer.step()
    save_result(state_bytes(model, optimizer))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--width", type=int, default=None)
    args = parser.parse_args()
    width = args.width or (256 if args.quick else 560)
    if is_worker():
        worker(width)
        return
    torch.manual_seed(0)
    model = make_model(width)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, width)).square().mean().backward()
    optimizer.step()
    single = state_bytes(model, optimizer)
    ranks = run_workers(__file__, 2, ["--width", str(width)])
    from deepseek.distributed.planner import plan_memory

    plan = plan_memory(lambda: make_model(width), strategies=["single", "fsdp"], world_size=2,
                       batch_size=4, input_shape=(width,))  # fmt: skip
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params / 1e6:.1f}M parameters, AdamW, after one step")
    print("| setup | params | grads | optimizer | total MiB | vs 1 process | planner MiB |")
    print("|---|---|---|---|---|---|---|")
    total1 = sum(single.values())
    rows = [("1 process", single, plan["single"])] + [
        (f"fsdp, 2 ranks (rank {r})", res, plan["fsdp"]) for r, res in enumerate(ranks)
    ]
    for label, res, est in rows:
        total = sum(res.values())
        est_total = est.params + est.grads + est.optimizer
        print(f"| {label} | {res['params'] / 2**20:.2f} | {res['grads'] / 2**20:.2f} | "
              f"{res['optimizer'] / 2**20:.2f} | {total / 2**20:.2f} | {total / total1:.3f}x | "
              f"{est_total / 2**20:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
