"""Strategies: how a model and its data are spread over processes.

``Strategy`` is the interface the Trainer talks to; ``SingleDeviceStrategy`` (name
``single``) is the default. deepseek-dist registers ``ddp``, ``fsdp``, ... that override
the process-group parts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from deepseek import checkpoint as ckpt
from deepseek.backends import Backend
from deepseek.training.data import EpochSampler, rebuild_dataloader


class Strategy:
    """Single process by default; subclasses add process groups and model wrapping."""

    name = "base"

    def __init__(self) -> None:
        self.backend: Backend | None = None
        self.device = torch.device("cpu")

    # -- process topology ----------------------------------------------------------------
    @property
    def world_size(self) -> int:
        return 1

    @property
    def rank(self) -> int:
        return 0

    @property
    def is_global_zero(self) -> bool:
        return self.rank == 0

    def setup(self, backend: Backend) -> None:
        """Pick the device (and, for distributed strategies, join the process group)."""
        self.backend = backend
        self.device = backend.device()

    def teardown(self) -> None:
        pass

    def barrier(self) -> None:
        pass

    def reduce(self, value: torch.Tensor, op: str = "mean") -> torch.Tensor:
        """Combine a tensor across processes (identity with one process)."""
        return value

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj

    # -- model, optimizer, data ----------------------------------------------------------
    def setup_model(self, model: nn.Module) -> nn.Module:
        return model.to(self.device)

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The user's module inside any wrapper (DDP, compile)."""
        while True:
            inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
            if not isinstance(inner, nn.Module):
                return model
            model = inner

    def setup_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        return optimizer

    def setup_dataloader(
        self, loader: DataLoader, *, shuffle: bool, seed: int, drop_last: bool = False
    ) -> DataLoader:
        """Rebuild ``loader`` around an ``EpochSampler`` so its order is reproducible per
        epoch and a resumed run can start mid-epoch."""
        sampler = EpochSampler(
            len(loader.dataset),
            shuffle=shuffle,
            seed=seed,
            num_replicas=self.world_size,
            rank=self.rank,
            drop_last=drop_last,
        )
        return rebuild_dataloader(loader, sampler)

    def batch_to_device(self, batch: Any) -> Any:
        if self.device.type == "cpu":
            return batch  # DataLoader batches already live on the host
        return self._to_device(batch)

    def _to_device(self, batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, Mapping):
            return type(batch)({k: self._to_device(v) for k, v in batch.items()})
        if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
            return type(batch)(*(self._to_device(v) for v in batch))
        if isinstance(batch, (list, tuple)):
            return type(batch)(self._to_device(v) for v in batch)
        return batch

    def no_backward_sync(
        self, model: nn.Module, enabled: bool
    ) -> contextlib.AbstractContextManager:
        """Skip gradient synchronisation while accumulating (DDP's ``no_sync``)."""
        return contextlib.nullcontext()

    # -- checkpoints ---------------------------------------------------------------------
    def model_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return self.unwrap(model).state_dict()

    def load_model_state_dict(
        self, model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True
    ) -> None:
        self.unwrap(model).load_state_dict(state, strict=strict)

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    def load_optimizer_state_dict(
        self, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> None:
        optimizer.load_state_dict(state)

    def save_checkpoint(
        self,
        path: str | Path,
        model_state: Mapping[str, torch.Tensor],
        trainer_state: Mapping[str, Any] | None,
        metadata: Mapping[str, Any],
    ) -> Path:
        """Write a checkpoint directory (rank 0 writes; others wait)."""
        path = Path(path)
        if self.is_global_zero:
            ckpt.save_checkpoint(path, model_state, trainer_state, metadata)
        self.barrier()
        return path

    def load_checkpoint(self, path: str | Path) -> ckpt.Checkpoint:
        return ckpt.load_checkpoint(path, map_location="cpu")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SingleDeviceStrategy(Strategy):
    """One process on one device (the default, ``strategy="single"``)."""

    name = "single"
