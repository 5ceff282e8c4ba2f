"""The fit, validation and predict loops.

Plain functions over a ``Trainer``: they read its settings and progress counters, call
the strategy for the parts a parallelism changes (forward-backward, clipping, optimizer
step, reductions) and the callbacks at each hook. No pluggy, no host-device sync on a
step's hot path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from deepseek.training import checkpointing
from deepseek.training.data import EpochSampler
from deepseek.training.loss import predict_output, validation_values
from deepseek.utils.batch import batch_size_of

if TYPE_CHECKING:
    from deepseek.training.trainer import Trainer


def fit_loop(trainer: Trainer, loader: DataLoader, val_loader: DataLoader | None) -> None:
    trainer._call("on_fit_start")
    sampler: EpochSampler = loader.sampler  # type: ignore[assignment]
    while not trainer._finished():
        sampler.set_epoch(trainer.current_epoch)
        sampler.start_at(trainer.batch_idx * loader.batch_size)
        trainer._epoch_done = False
        # The iterator draws the DataLoader's base seed from the global RNG: a resumed
        # RNG state goes before or after that draw, as it was captured.
        checkpointing.apply_pending_rng(trainer, iterator_created=False)
        iterator = iter(loader)
        trainer._iterator_started = True
        checkpointing.apply_pending_rng(trainer, iterator_created=True)
        trainer._call("on_train_epoch_start")
        trainer.model.train()
        for batch in iterator:
            train_batch(trainer, batch, val_loader)
            if trainer.should_stop or trainer._max_steps_reached() or trainer._interrupted:
                break
        if trainer._interrupted:
            return
        trainer._nan_guard.check(trainer)
        if (
            val_loader is not None
            and trainer._validate_this_epoch()
            and trainer._last_val_step != trainer.global_step  # not twice at one step
        ):
            fit_validation(trainer, val_loader)
        if trainer.scheduler is not None and trainer.scheduler_interval == "epoch":
            scheduler_step(trainer)
        trainer._epoch_done = True
        trainer._iterator_started = False
        trainer._call("on_train_epoch_end")
        trainer._epoch_summary()
        trainer.current_epoch += 1
        trainer.batch_idx = 0
    trainer._nan_guard.check(trainer)
    trainer._call("on_fit_end")


def train_batch(trainer: Trainer, batch: Any, val_loader: DataLoader | None) -> None:
    batch_idx = trainer.batch_idx
    for cb in trainer.callbacks:
        cb.on_train_batch_start(trainer, batch, batch_idx)
    batch = trainer.strategy.batch_to_device(batch)
    k = trainer.accumulate_grad_batches
    n = trainer.num_training_batches
    boundary = (batch_idx + 1) % k == 0 or batch_idx + 1 == n
    # The last window of an epoch may be short: divide by its real size.
    window = k if (batch_idx // k + 1) * k <= n else n % k
    loss = trainer.strategy.forward_backward(
        trainer, batch, batch_idx, loss_divisor=window, sync_gradients=boundary
    )
    trainer.batch_idx += 1
    trainer.optimizer_stepped = boundary
    trainer.metrics["train_loss"] = loss
    if boundary:
        if trainer.automatic_optimization:
            optimizer_step(trainer)
        else:
            trainer.global_step += 1
            if trainer.scheduler is not None and trainer.scheduler_interval == "step":
                scheduler_step(trainer)
        every = trainer.val_every_n_steps
        if val_loader is not None and every and trainer.global_step % every == 0:
            fit_validation(trainer, val_loader)
    for cb in trainer.callbacks:
        cb.on_train_batch_end(trainer, {"loss": loss}, batch, batch_idx)


def optimizer_step(trainer: Trainer) -> None:
    strategy = trainer.strategy
    for optimizer in trainer.optimizers:
        trainer.precision.unscale(optimizer)
        for cb in trainer.callbacks:
            cb.on_before_optimizer_step(trainer, optimizer)
    if trainer.gradient_clip_norm is not None:
        norm = strategy.clip_gradients(
            trainer.model, trainer.gradient_clip_norm, optimizers=trainer.optimizers
        )
        trainer.metrics["grad_norm"] = norm.detach()
    for optimizer in trainer.optimizers:
        strategy.optimizer_step(trainer, optimizer)
        optimizer.zero_grad(set_to_none=True)
    trainer.global_step += 1
    if trainer.scheduler is not None and trainer.scheduler_interval == "step":
        scheduler_step(trainer)


def scheduler_step(trainer: Trainer) -> None:
    scheduler = trainer.scheduler
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if "val_loss" not in trainer.metrics:
            raise ValueError(
                "ReduceLROnPlateau needs val_loss: pass val_data and scheduler_interval='epoch'"
            )
        scheduler.step(trainer.metrics["val_loss"])
    else:
        scheduler.step()


def fit_validation(trainer: Trainer, loader: DataLoader) -> dict[str, float]:
    trainer._nan_guard.check(trainer)
    # Recorded first: a checkpoint written in on_validation_end must not validate again.
    trainer._last_val_step = trainer.global_step
    return validation_loop(trainer, loader)


@torch.no_grad()
def validation_loop(trainer: Trainer, loader: DataLoader, prefix: str = "val") -> dict[str, float]:
    """Average each value over the whole set (weighted by batch size, reduced across
    ranks); accumulating metrics see every batch's outputs and are computed once."""
    trainer._call("on_validation_start")
    was_training = trainer.model.training
    trainer.model.eval()
    strategy = trainer.strategy
    metrics = trainer.metric_collection
    if metrics:
        metrics.reset()
    totals: dict[str, torch.Tensor] = {}
    count = torch.zeros((), dtype=torch.float64)
    trainer._logging_stage = prefix
    try:
        for batch_idx, batch in enumerate(loader):
            batch = strategy.batch_to_device(batch)
            with trainer.precision.autocast():
                values, output, target = validation_values(trainer, batch, batch_idx)
                if metrics:
                    trainer._update_metrics(output, target)
            n = batch_size_of(batch)
            for name, value in values.items():
                value = value.detach().double().cpu() * n
                totals[name] = totals[name] + value if name in totals else value
            count += n
    finally:
        trainer._logging_stage = "train"
    count = strategy.reduce(count.to(strategy.device), "sum").cpu()
    results: dict[str, float] = {}
    for name, total in totals.items():
        summed = strategy.reduce(total.to(strategy.device), "sum").cpu()
        results[f"{prefix}_{name}"] = float(summed / count)
    if metrics:  # accumulating metrics all-reduce their own statistics
        for name, value in metrics.compute().items():
            if value is not None:
                results[f"{prefix}_{name}"] = float(value)
    results.update(trainer._flush_epoch_logs(prefix))
    trainer.metrics.update(results)
    trainer.model.train(was_training)
    trainer._call("on_validation_end")
    return results


@torch.no_grad()
def predict_loop(trainer: Trainer, loader: DataLoader) -> Any:
    trainer.model.eval()
    outputs = []
    for batch_idx, batch in enumerate(loader):
        batch = trainer.strategy.batch_to_device(batch)
        with trainer.precision.autocast():
            outputs.append(predict_output(trainer, batch, batch_idx))
    if outputs and all(isinstance(o, torch.Tensor) for o in outputs):
        return torch.cat(outputs)
    return outputs
