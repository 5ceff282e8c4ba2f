"""Run by torchrun from test_dist_ddp.py: one process of a 2-process gloo job.

Each rank runs every scenario on a real process group and saves what it saw to
``<out>/rank<R>.pt``; the test compares the ranks with a single-process reference that
``make_model``/``make_dataset`` (imported by the test) rebuild exactly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

PER_RANK_BATCH = 2
STEPS_PER_EPOCH = 4  # at the per-rank batch size
LR = 0.1


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))


def make_dataset(world_size: int = 2) -> TensorDataset:
    generator = torch.Generator().manual_seed(1)
    n = PER_RANK_BATCH * STEPS_PER_EPOCH * world_size
    return TensorDataset(
        torch.randn(n, 3, generator=generator), torch.randn(n, 2, generator=generator)
    )


class WithTrainingStep(nn.Module):
    """A Lightning-style module: the loss comes from training_step, not from loss_fn."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self(x), y)


def flat_grad(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone()


def train(strategy, accumulate: int, out: dict) -> dict[str, torch.Tensor]:
    """Plain DDP steps; with ``accumulate`` > 1 the first micro-batches skip the sync."""
    model = strategy.setup_model(make_model())
    calls: list[int] = []

    def counting_allreduce(state, bucket):  # DDP's own all-reduce, counted
        calls.append(1)
        return default_hooks.allreduce_hook(state, bucket)

    model.register_comm_hook(None, counting_allreduce)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loader = DataLoader(make_dataset(), batch_size=PER_RANK_BATCH)
    loader = strategy.setup_dataloader(loader, shuffle=True, seed=0)
    out["indices"] = torch.tensor(loader.sampler.indices())
    out["calls_inside"], out["calls_boundary"] = [], []
    out["grads_inside"], out["grads_boundary"] = [], []
    for i, batch in enumerate(loader):
        x, y = strategy.batch_to_device(batch)
        boundary = (i + 1) % accumulate == 0
        before = len(calls)
        with strategy.no_backward_sync(model, enabled=not boundary):
            (F.mse_loss(model(x), y) / accumulate).backward()
        key = "boundary" if boundary else "inside"
        out[f"calls_{key}"].append(len(calls) - before)
        out[f"grads_{key}"].append(flat_grad(model))
        if boundary:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return strategy.model_state_dict(model)


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    import deepseek as ds
    from deepseek.plugins import registry

    strategy = registry("strategy").create("ddp")
    strategy.setup(ds.backends.get("cpu"))  # joins the group from torchrun's variables
    rank = strategy.rank
    result: dict = {
        "world_size": strategy.world_size,
        "rank": rank,
        "torch_rank": dist.get_rank(),
        "backend": dist.get_backend(),
        "device": str(strategy.device),
    }

    # reduce: each rank contributes values derived from its rank
    value = torch.tensor([rank + 1.0, -10.0 * (rank + 1), 0.5 * rank])
    result["reduce_input"] = value.clone()
    for op in ("sum", "mean", "max", "min"):
        result[f"reduce_{op}"] = strategy.reduce(value, op)
    result["reduce_input_after"] = value
    result["reduce_int_mean"] = strategy.reduce(torch.tensor([rank + 1]), "mean")

    result["broadcast"] = strategy.broadcast({"from": rank, "items": [rank] * 3}, src=1)

    result["plain"] = {}
    result["plain_state"] = train(strategy, accumulate=1, out=result["plain"])
    result["accum"] = {}
    result["accum_state"] = train(strategy, accumulate=2, out=result["accum"])

    # The Trainer with strategy="ddp" (reusing this process group).
    trainer = ds.Trainer(
        make_model(),
        torch.optim.SGD,
        optimizer_kwargs={"lr": LR},
        train_data=make_dataset(),
        batch_size=PER_RANK_BATCH,
        loss_fn=F.mse_loss,
        strategy="ddp",
        max_epochs=1,
        accumulate_grad_batches=2,
        seed=0,
        enable_progress_bar=False,
        default_root_dir=None,
    )
    trainer.fit()
    result["trainer_state"] = trainer.strategy.model_state_dict(trainer.model)
    result["trainer_steps"] = trainer.global_step

    # training_step must run through DDP's forward, or the ranks' gradients never sync.
    stepped = ds.Trainer(
        WithTrainingStep(),
        torch.optim.SGD,
        optimizer_kwargs={"lr": LR},
        train_data=make_dataset(),
        batch_size=PER_RANK_BATCH,
        strategy="ddp",
        max_epochs=1,
        seed=0,
        enable_progress_bar=False,
        default_root_dir=None,
    )
    stepped.fit()
    result["training_step_state"] = stepped.strategy.model_state_dict(stepped.model)

    # A second strategy reuses the existing group and must not destroy it.
    guest = registry("strategy").create("ddp")
    guest.setup(ds.backends.get("cpu"))
    guest.teardown()
    result["alive_after_guest_teardown"] = dist.is_initialized()
    strategy.barrier()
    strategy.teardown()
    result["alive_after_owner_teardown"] = dist.is_initialized()
    torch.save(result, out_dir / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
