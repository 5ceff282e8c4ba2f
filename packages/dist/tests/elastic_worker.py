"""Run by ``deepseek launch --max-restarts 3`` from test_dist_launch.py: DDP training with
ModelCheckpoint every 2 steps and ``fit(resume="last")``. With ``kill``, rank 1 SIGKILLs
itself at step 3 of the first attempt; torchrun's agent restarts both workers, which resume
from the step-2 checkpoint. Rank 0 saves the final weights to ``<out>/final.pt``."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

import deepseek as ds
from deepseek.callbacks import Callback, ModelCheckpoint


class KillAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, outputs, batch, batch_idx) -> None:
        attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        if attempt == 0 and trainer.strategy.rank == 1 and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main(out: Path, mode: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(64, 4, generator=g), torch.randn(64, 2, generator=g))
    callbacks = [ModelCheckpoint(filepath=str(out / "ckpt" / "step_{step}"), save_freq=2)]
    if mode == "kill":
        callbacks.append(KillAt(step=3))
    trainer = ds.Trainer(
        model, torch.optim.AdamW, optimizer_kwargs={"lr": 0.01}, train_data=data,
        batch_size=4, loss_fn=F.mse_loss, strategy="ddp", max_epochs=2, seed=0,
        callbacks=callbacks, enable_progress_bar=False, default_root_dir=str(out),
    )  # fmt: skip
    trainer.fit(resume="last")
    if trainer.is_global_zero:
        attempts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        torch.save(
            {"state": trainer.strategy.model_state_dict(trainer.model), "attempt": attempts,
             "steps": trainer.global_step},
            out / "final.pt",
        )  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
