"""One rank of a 2-process gloo ``ddp`` fit with the tensorboard logger (spawned by
test_tensorboard.py; kept light so the spawned processes start fast)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from deepseek_tensorboard import TensorBoardLogger

import deepseek as ds
from deepseek.callbacks import Callback


class Record(Callback):
    def __init__(self) -> None:
        self.seen: dict[int, float] = {}

    def on_train_batch_end(self, trainer, outputs, batch, batch_idx):
        if trainer.optimizer_stepped:
            self.seen[trainer.global_step] = trainer.metrics["train_loss"]


def rank(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=generator)
    data = torch.utils.data.TensorDataset(x, (x.sum(dim=1) > 0).long())
    logger = TensorBoardLogger(Path(out) / "tb", histogram_every_n_steps=2)
    trainer = ds.Trainer(
        torch.nn.Linear(4, 2),
        optimizer=torch.optim.SGD,
        optimizer_kwargs={"lr": 0.1},
        train_data=data,
        val_data=data,
        batch_size=4,
        max_epochs=1,
        loss_fn=torch.nn.functional.cross_entropy,
        strategy="ddp",
        enable_progress_bar=False,
        default_root_dir=out,
        seed=0,
        callbacks=[logger, record := Record()],
    )
    trainer.fit()
    result = {"is_global_zero": trainer.is_global_zero, "train_loss": record.seen}
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
