"""Strategies: how a model and its data are spread over processes.

``Strategy`` is the interface the Trainer talks to; ``SingleDeviceStrategy`` (name
``single``) is the default. deepseek-dist registers ``ddp``, ``fsdp``, ... that override
the process-group parts.

The Trainer asks the strategy for every part of a step that a parallelism changes, and
never special-cases a strategy. Each hook's default is the single-process behaviour:

=========================================  ==============================================
hook                                       default
=========================================  ==============================================
``setup(backend)`` / ``teardown()``        pick the device / nothing (always called, in a
                                           ``finally``)
``setup_model(model)``                     ``model.to(device)``
``setup_optimizer(optimizer)``             the optimizer unchanged
``setup_dataloader(loader, ...)``          an ``EpochSampler`` (sharded per rank)
``forward_backward(trainer, batch, i,      autocast + ``training_step`` + NaN guard +
loss_divisor=, sync_gradients=)``          ``backward``, inside ``no_backward_sync``;
                                           returns the detached loss
``training_step(trainer, batch, i)``       the loss by the step contract
                                           (``deepseek.training.loss``)
``backward(trainer, loss)``                ``trainer.precision.backward(loss)``
``clip_gradients(model, max_norm,          ``clip_grad_norm_`` over the optimizers'
optimizers=)``                             parameters; returns the total norm
``optimizer_step(trainer, optimizer)``     ``trainer.precision.step(optimizer)``
``reduce(tensor, op)``                     identity
``model_state_dict(model)`` / ``load_...``  the unwrapped module's state dict
``optimizer_state_dict(optimizer)`` / ...  ``optimizer.state_dict()``
``save_checkpoint`` / ``load_checkpoint``  ``deepseek.checkpoint`` (rank 0 writes)
=========================================  ==============================================

A pipeline strategy overrides ``forward_backward`` to run its schedule's microbatches;
a sharded one overrides ``clip_gradients`` (the norm over all shards) and the state-dict
hooks; an expert-parallel one ``reduce`` and the state-dict hooks. Wrapper modules a
strategy adds are declared with ``Strategy.register_wrapper_type`` so ``unwrap`` sees
through them (by type, never by attribute name).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from deepseek import checkpoint as ckpt
from deepseek.backends import Backend
from deepseek.nn.wrappers import register_wrapper_type, unwrap
from deepseek.training.data import EpochSampler, rebuild_dataloader
from deepseek.training.loss import training_loss

if TYPE_CHECKING:
    from deepseek.training.trainer import Trainer


class Strategy:
    """Single process by default; subclasses add process groups and model wrapping."""

    name = "base"

    def __init__(self) -> None:
        self.backend: Backend | None = None
        self.device = torch.device("cpu")
        self.precision: Any = None  # set by connect_precision

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

    def connect_precision(self, precision: Any) -> None:
        """Called once before ``setup_model`` with the run's ``Precision``; sharded
        strategies read it for their mixed-precision policy (kept as ``self.precision``)."""
        self.precision = precision

    def teardown(self) -> None:
        """Release what ``setup`` acquired. The Trainer calls it when a stage ends, also
        after an exception; it must be safe to call more than once."""

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
        """The user's module inside any registered wrapper (DDP, FSDP, torch.compile,
        activation-checkpoint wrappers, the Trainer's step dispatcher), found by type."""
        return unwrap(model)

    @staticmethod
    def register_wrapper_type(cls: type, inner: Any) -> None:
        """Declare a wrapper class this strategy adds; ``inner`` is the attribute name
        (or a function) that reaches the wrapped module. See ``deepseek.nn.wrappers``."""
        register_wrapper_type(cls, inner)

    def setup_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        return optimizer

    def setup_dataloader(
        self, loader: DataLoader, *, shuffle: bool, seed: int, drop_last: bool = False
    ) -> DataLoader:
        """Rebuild ``loader`` around an ``EpochSampler`` so its order is reproducible per
        epoch and a resumed run can start mid-epoch."""
        if isinstance(loader.sampler, EpochSampler):  # a user's subclass (length buckets...)
            sampler = loader.sampler
            sampler.configure(
                num_replicas=self.world_size, rank=self.rank, seed=seed, shuffle=shuffle,
                drop_last=drop_last,
            )  # fmt: skip
            return loader
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

    # -- the step ------------------------------------------------------------------------
    def forward_backward(
        self,
        trainer: Trainer,
        batch: Any,
        batch_idx: int,
        *,
        loss_divisor: int = 1,
        sync_gradients: bool = True,
    ) -> torch.Tensor:
        """Forward and backward of one micro-batch; returns its detached loss.

        ``loss_divisor`` is the gradient-accumulation window (divide the loss by it
        before ``backward``); ``sync_gradients`` is False while accumulating (data
        parallel strategies skip their all-reduce). A strategy that runs its own
        microbatches (a pipeline schedule) overrides this and returns the mean loss.
        """
        if not sync_gradients:
            with self.no_backward_sync(trainer.model, enabled=True):
                return self._forward_backward(trainer, batch, batch_idx, loss_divisor)
        return self._forward_backward(trainer, batch, batch_idx, loss_divisor)

    def _forward_backward(
        self, trainer: Trainer, batch: Any, batch_idx: int, loss_divisor: int
    ) -> torch.Tensor:
        if trainer._autocast_is_noop:  # fp32: skip entering a null context every step
            loss = self.training_step(trainer, batch, batch_idx)
        else:
            with trainer.precision.autocast():
                loss = self.training_step(trainer, batch, batch_idx)
        if trainer._loss_hooks:
            loss = trainer._apply_loss_hooks(loss, batch)
        detached = loss.detach()
        if not trainer._nan_guard.observe(trainer, detached) and trainer.automatic_optimization:
            self.backward(trainer, loss / loss_divisor if loss_divisor > 1 else loss)
        return detached

    def training_step(self, trainer: Trainer, batch: Any, batch_idx: int) -> torch.Tensor:
        """The micro-batch's loss, by the step contract of ``deepseek.training.loss``."""
        return training_loss(trainer, batch, batch_idx)

    def backward(self, trainer: Trainer, loss: torch.Tensor) -> None:
        trainer.precision.backward(loss)

    def clip_gradients(
        self,
        model: nn.Module,
        max_norm: float,
        optimizers: Sequence[torch.optim.Optimizer] | None = None,
    ) -> torch.Tensor:
        """Clip the gradients' global 2-norm to ``max_norm``; return the norm before
        clipping. Sharded strategies override this to take the norm over all shards."""
        if optimizers:
            params = [p for opt in optimizers for g in opt.param_groups for p in g["params"]]
        else:
            params = list(model.parameters())
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def optimizer_step(self, trainer: Trainer, optimizer: torch.optim.Optimizer) -> bool:
        """Step ``optimizer`` (through the precision's loss scaler); False if skipped."""
        return trainer.precision.step(optimizer)

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
