"""The Trainer's checkpoint side: what a checkpoint records and how a run resumes from it.

One job: turn a running Trainer into checkpoint contents (``capture_trainer_state``,
``save``) and back (``resolve_resume_path``, ``restore``, ``apply_pending_rng``). The
file format itself lives in ``deepseek.checkpoint``; the strategy decides how model and
optimizer state are gathered and written (sharded strategies write their own layout).

Exact resume and the RNG: the DataLoader draws a base seed from the global RNG when an
epoch's iterator is created. A checkpoint taken inside an epoch (after that draw) must
have its RNG state restored *after* the resumed run creates its iterator; one taken
after the epoch's batches (epoch end, after its validation) *before* the next epoch's
iterator is created. ``progress["iterator_started"]`` records which.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepseek import checkpoint as ckpt
from deepseek.checkpoint.format import read_meta
from deepseek.training.loss import is_number

if TYPE_CHECKING:
    from deepseek.training.trainer import Trainer


def capture_trainer_state(trainer: Trainer) -> dict[str, Any]:
    """Everything besides the model weights that an exact resume needs (plain data and
    tensors only: it is loaded with ``torch.load(weights_only=True)``)."""
    return {
        "progress": {
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "batch_idx": trainer.batch_idx,
            "epoch_done": trainer._epoch_done,
            "iterator_started": trainer._iterator_started,
            "last_val_step": trainer._last_val_step,
            "nan_losses_skipped": trainer.nan_losses_skipped,
            "data_seed": trainer._data_seed,
        },
        "optimizer": _optimizer_states(trainer),
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
        "precision": trainer.precision.state_dict(),
        "rng": ckpt.get_rng_state(),
        "callbacks": {cb.state_key: cb.state_dict() for cb in trainer.callbacks},
        "metrics": numeric_metrics(trainer),
    }


def _optimizer_states(trainer: Trainer) -> Any:
    optimizers = trainer.optimizers
    if len(optimizers) == 1:
        return trainer.strategy.optimizer_state_dict(optimizers[0])
    return [trainer.strategy.optimizer_state_dict(opt) for opt in optimizers]


def numeric_metrics(trainer: Trainer) -> dict[str, float]:
    return {k: v for k, v in trainer.metrics.as_floats().items() if is_number(v)}


def save(
    trainer: Trainer, path: str | os.PathLike, weights_only: bool = False, **metadata: Any
) -> Path:
    """Write a checkpoint directory (atomically, through the strategy) and tell callbacks."""
    trainer._nan_guard.check(trainer)
    model_state = trainer.strategy.model_state_dict(trainer.model)
    meta = {
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "metrics": numeric_metrics(trainer),
        **metadata,
    }
    trainer_state = None if weights_only else capture_trainer_state(trainer)
    path = trainer.strategy.save_checkpoint(path, model_state, trainer_state, meta)
    for cb in trainer.callbacks:
        cb.on_save_checkpoint(trainer, str(path))
    return path


def checkpoint_roots(trainer: Trainer) -> list[Path]:
    """Folders where this Trainer's callbacks write checkpoints."""
    roots = [Path(d) for cb in trainer.callbacks if (d := getattr(cb, "dirpath", None))]
    if trainer.default_root_dir is not None:
        roots.append(trainer.default_root_dir / "checkpoints")
    return roots


def resolve_resume_path(trainer: Trainer, resume: str | os.PathLike) -> Path | None:
    """``"last"``: the newest full checkpoint under the callbacks' folders (None, with a
    warning, when there is none); anything else is a path."""
    if str(resume) != "last":
        return Path(resume)
    roots = checkpoint_roots(trainer)
    found = [p for root in roots if (p := ckpt.latest_checkpoint(root)) is not None]
    metas = {p: read_meta(p) for p in found}
    full = [p for p, meta in metas.items() if meta.get("kind") == "full"]
    if not full:
        warnings.warn(
            f"resume='last' found no full checkpoint under {[str(r) for r in roots]}; "
            "starting from scratch",
            stacklevel=4,
        )
        return None
    return max(full, key=lambda p: metas[p]["metadata"].get("global_step", -1))


def restore(trainer: Trainer, resume: str | os.PathLike) -> Path | None:
    """Load model, optimizer, scheduler, precision, progress, metrics and callback state
    from a checkpoint. The RNG state is kept aside for ``apply_pending_rng``."""
    path = resolve_resume_path(trainer, resume)
    if path is None:
        return None
    checkpoint = trainer.strategy.load_checkpoint(path)
    if checkpoint.trainer_state is None:
        raise ValueError(
            f"{path} is a weights-only checkpoint: it has no optimizer or progress "
            "state, so training cannot resume from it. Load it with "
            "deepseek.checkpoint.load_weights(model, path), or save full checkpoints "
            "(ModelCheckpoint(save_weights_only=False))"
        )
    state = checkpoint.trainer_state
    trainer.strategy.load_model_state_dict(trainer.model, checkpoint.model_state)
    _load_optimizer_states(trainer, state["optimizer"], path)
    if trainer.scheduler is not None and state.get("scheduler") is not None:
        trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.precision.load_state_dict(state.get("precision", {}))
    progress = state["progress"]
    trainer.global_step = progress["global_step"]
    trainer.nan_losses_skipped = progress.get("nan_losses_skipped", 0)
    trainer._data_seed = progress["data_seed"]
    trainer._last_val_step = progress.get("last_val_step")
    if progress["epoch_done"]:
        trainer.current_epoch, trainer.batch_idx = progress["epoch"] + 1, 0
    else:
        trainer.current_epoch, trainer.batch_idx = progress["epoch"], progress["batch_idx"]
    # Checkpoints from before this field existed were taken inside an epoch unless done.
    trainer._rng_after_iterator = progress.get("iterator_started", not progress["epoch_done"])
    trainer.metrics.update(state.get("metrics", {}))
    saved = state.get("callbacks", {})
    for cb in trainer.callbacks:
        if cb.state_key in saved:
            cb.load_state_dict(saved[cb.state_key])
    trainer._pending_rng = state["rng"]
    for cb in trainer.callbacks:
        cb.on_load_checkpoint(trainer, str(path))
    return path


def _load_optimizer_states(trainer: Trainer, states: Any, path: Path) -> None:
    optimizers = trainer.optimizers
    if len(optimizers) == 1 and isinstance(states, dict):
        states = [states]
    if not isinstance(states, list) or len(states) != len(optimizers):
        count = len(states) if isinstance(states, list) else 1
        raise ValueError(
            f"{path} holds the state of {count} optimizer(s) but this run has "
            f"{len(optimizers)}; resume with the same optimizers, or load only the weights "
            "with deepseek.checkpoint.load_weights(model, path)"
        )
    for optimizer, state in zip(optimizers, states):
        trainer.strategy.load_optimizer_state_dict(optimizer, state)


def apply_pending_rng(trainer: Trainer, *, iterator_created: bool) -> None:
    """Restore the resumed RNG state at the point of the epoch where it was captured:
    before the epoch's iterator exists (epoch-end checkpoints) or after (mid-epoch)."""
    if trainer._pending_rng is None or trainer._rng_after_iterator != iterator_created:
        return
    ckpt.set_rng_state(trainer._pending_rng)
    trainer._pending_rng = None
