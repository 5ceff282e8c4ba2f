"""Run by torchrun from test_dist_strategies.py: one rank of a gloo job that trains the same
small model with each strategy through the Trainer and saves what it got.

Scenarios per strategy: an uninterrupted run (2 epochs, gradient accumulation 2, gradient
clipping), and a run stopped after 1 epoch, checkpointed, and resumed by a fresh Trainer.
``make_model``/``make_dataset``/``TRAINER_KWARGS`` are imported by the test to build the
single-process reference on the same global batch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from deepseek.callbacks import Callback

GLOBAL_BATCH = 8
SAMPLES = 32
TRAINER_KWARGS = dict(
    optimizer_kwargs={"lr": 0.02},
    loss_fn=F.mse_loss,
    accumulate_grad_batches=2,
    gradient_clip_norm=0.3,
    seed=0,
    enable_progress_bar=False,
    default_root_dir=None,
    shuffle=False,
)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.tanh(self.fc1(x)))


class Net(nn.Sequential):
    """Stem, a stack of two blocks (FSDP units, TP plan), head: splits into 2 stages."""

    tp_plan = {"1.*.fc1": "colwise", "1.*.fc2": "rowwise"}


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return Net(nn.Linear(4, 8), nn.Sequential(Block(), Block()), nn.Linear(8, 2))


def make_dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(SAMPLES, 4, generator=g), torch.randn(SAMPLES, 2, generator=g))


# name -> (strategy, data-parallel replicas as a function of the world size)
STRATEGIES = {
    "ddp": ("ddp", lambda world: world),
    "ddp_sum": ({"name": "ddp", "reduce_strategy": "gradient_sum"}, lambda world: world),
    "fsdp": ("fsdp", lambda world: world),
    "fsdp_noreshard": ({"name": "fsdp", "reshard_after_forward": False}, lambda world: world),
    "tp": ("tp", lambda world: 1),
    "pipeline_gpipe": ({"name": "pipeline", "num_microbatches": 2}, lambda world: 1),
    "pipeline_1f1b": (
        {"name": "pipeline", "num_microbatches": 2, "schedule": "1f1b"},
        lambda world: 1,
    ),
    "pipeline_interleaved": (
        {"name": "pipeline", "num_microbatches": 2, "schedule": "interleaved"},
        lambda world: 1,
    ),
    "fsdp_sharded": ({"name": "fsdp", "checkpoint": "sharded"}, lambda world: world),
    "tp_sharded": ({"name": "tp", "checkpoint": "sharded"}, lambda world: 1),
    "2d": ({"name": "2d", "tp": 2}, lambda world: world // 2),  # run with 4 processes
}


class SaveAfterFirstEpoch(Callback):
    """Checkpoint at the end of epoch 0 (every rank takes part: sharded strategies gather)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer) -> None:
        if trainer.current_epoch == 0:
            trainer.save_checkpoint(self.path)


def weights(trainer) -> dict[str, torch.Tensor]:
    """The whole model's weights whatever the checkpoint layout (sharded strategies save
    no gathered state dict)."""
    if getattr(trainer.strategy, "checkpoint", "full") == "sharded":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(trainer.model, options=options)
    return trainer.strategy.model_state_dict(trainer.model)


def per_rank_batch(replicas, world: int) -> int:
    return GLOBAL_BATCH // replicas(world)


# Scenarios whose reference differs from the plain one: (optimizer, loss scale, clip).
# gradient_sum: each step's gradient is the sum of the ranks' means = world x the global
# mean; SGD (Adam would hide a scale) without clipping (which would too).
VARIANTS = {"ddp_sum": (torch.optim.SGD, 2.0, None)}


def scaled_mse(scale: float):
    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return scale * F.mse_loss(output, target)

    return loss


def trainer_kwargs(name: str) -> dict:
    kwargs = dict(TRAINER_KWARGS, optimizer=torch.optim.AdamW)
    if name in VARIANTS:
        optimizer, _, clip = VARIANTS[name]
        kwargs.update(optimizer=optimizer, gradient_clip_norm=clip)
    return kwargs


def build(name: str, strategy, data_parallel: bool, world: int, epochs: int):
    import deepseek as ds
    from deepseek.plugins import registry

    if isinstance(strategy, dict):
        options = dict(strategy)
        strategy = registry("strategy").create(options.pop("name"), **options)
    return ds.Trainer(
        make_model(),
        train_data=make_dataset(),
        batch_size=per_rank_batch(data_parallel, world),
        strategy=strategy,
        max_epochs=epochs,
        **trainer_kwargs(name),
    )


def main(out: Path, names: list[str], resume_from: str | None = None) -> None:
    torch.set_num_threads(1)
    import torch.distributed as dist

    import deepseek.distributed as ddist

    ddist.init_process_group("gloo", timeout_s=120)
    rank, world = dist.get_rank(), dist.get_world_size()
    result: dict = {}
    if resume_from:  # only: continue a checkpoint written by another world size
        (name,) = names
        strategy, data_parallel = STRATEGIES[name]
        resumed = build(name, strategy, data_parallel, world, epochs=2)
        resumed.fit(resume=resume_from)
        result[f"{name}/resumed_from_other_world"] = weights(resumed)
        names = []
    for name in names:
        strategy, data_parallel = STRATEGIES[name]
        ckpt = out / f"{name}-epoch1"
        full = build(name, strategy, data_parallel, world, epochs=2)
        full.callbacks.append(SaveAfterFirstEpoch(ckpt))
        full.fit()
        result[f"{name}/state"] = weights(full)
        result[f"{name}/steps"] = full.global_step
        result[f"{name}/loss"] = float(full.metrics["train_loss"])

        resumed = build(name, strategy, data_parallel, world, epochs=2)
        resumed.fit(resume=ckpt)
        result[f"{name}/resumed"] = weights(resumed)
        result[f"{name}/resumed_steps"] = resumed.global_step
    if rank == 0:
        torch.save(result, out / "rank0.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2].split(","), *sys.argv[3:4])
