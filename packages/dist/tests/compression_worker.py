"""Run by torchrun (2 ranks) from test_dist_compression.py: DDP with each gradient
compression for a few steps (bytes handed to the collective per step, final weights), and
bad inputs that must fail on every rank before any collective (the group stays usable)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

COMPRESSIONS = {
    "none": "none",
    "fp16": "fp16",
    "bf16": "bf16",
    "powersgd": {"name": "powersgd", "rank": 2, "warmup_steps": 2},
}
STEPS = 5


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))


def batches(rank: int):
    g = torch.Generator().manual_seed(10 + rank)
    return [
        (torch.randn(16, 64, generator=g), torch.randn(16, 10, generator=g)) for _ in range(STEPS)
    ]


def errors_everywhere() -> dict[str, str]:
    import deepseek.distributed as ddist
    from deepseek.distributed.tensor_parallel import TwoDStrategy

    found = {}
    try:
        TwoDStrategy(dp=2, tp=2).setup(__import__("deepseek").backends.get("cpu"))
    except ValueError as exc:
        found["mesh"] = str(exc)
    try:
        ddist.DDPStrategy(gradient_compression="zip")
    except ValueError as exc:
        found["compression"] = str(exc)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    try:
        ddist.PipelineParallel(model, num_microbatches=2, split_points=["1", "2"])
    except ValueError as exc:
        found["split"] = str(exc)
    pipe = ddist.PipelineParallel(model, num_microbatches=3)
    try:
        pipe.step(torch.randn(8, 4), target=torch.randn(8, 2), loss_fn=F.mse_loss)
    except ValueError as exc:
        found["microbatches"] = str(exc)
    ok = torch.ones(1)
    dist.all_reduce(ok)  # nobody is stuck in a collective: the group still works
    found["group_alive"] = str(int(ok.item()))
    return found


def main(out: Path) -> None:
    torch.set_num_threads(1)
    import deepseek as ds
    import deepseek.distributed as ddist

    ddist.init_process_group("gloo", timeout_s=120)
    rank = dist.get_rank()
    result: dict = {"errors": errors_everywhere()}
    for name, spec in COMPRESSIONS.items():
        strategy = ddist.DDPStrategy(gradient_compression=spec)
        strategy.setup(ds.backends.get("cpu"))
        model = strategy.setup_model(make_model())
        if name == "none":  # count plain DDP too
            strategy.compression.register(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in batches(rank):
            F.mse_loss(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
        result[name] = {
            "bytes": list(strategy.compression.bytes_per_step),
            "state": {k: v.detach().clone() for k, v in model.module.state_dict().items()},
        }
    torch.save(result, out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
