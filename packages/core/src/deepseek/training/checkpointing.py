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
        "settings": run_settings(trainer),
    }


def run_settings(trainer: Trainer) -> dict[str, Any]:
    """The settings a resume compares with the checkpoint's (plain data)."""
    return {
        "optimizers": [_class_name(opt) for opt in trainer.optimizers],
        "batch_size": getattr(trainer, "batch_size", None),
        "accumulate_grad_batches": getattr(trainer, "accumulate_grad_batches", None),
        "world_size": trainer.strategy.world_size,
    }


def _class_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


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
    if "model" not in meta and (hparams := ckpt.capture_hparams(trainer.model)) is not None:
        meta["model"] = hparams  # what deepseek.checkpoint.load_model rebuilds from
    trainer_state = None if weights_only else capture_trainer_state(trainer)
    path = trainer.strategy.save_checkpoint(path, model_state, trainer_state, meta)
    for cb in trainer.callbacks:
        cb.on_save_checkpoint(trainer, str(path))
    return path


def checkpoint_roots(trainer: Trainer) -> list[Path]:
    """Folders where this Trainer's callbacks write checkpoints."""
    roots = [Path(d) for cb in trainer.callbacks if (d := getattr(cb, "dirpath", None))]
    if trainer.default_root_dir is not None:
        roots.append(Path(trainer.default_root_dir) / "checkpoints")
    return list(dict.fromkeys(roots))  # once each, in order


def resolve_resume_path(trainer: Trainer, resume: str | os.PathLike) -> Path | None:
    """``"last"``: the newest full checkpoint of the run that owns the callbacks' folders
    (None, with a warning, when there is none); anything else is a path."""
    if str(resume) != "last":
        return Path(resume)
    try:
        return ckpt.resolve_checkpoint_path(trainer, "last", require_full=True)
    except FileNotFoundError:
        roots = checkpoint_roots(trainer)
        warnings.warn(
            f"resume='last' found no full checkpoint under {[str(r) for r in roots]}; "
            "starting from scratch",
            stacklevel=4,
        )
        return None


def restore(
    trainer: Trainer, resume: str | os.PathLike, *, weights_only: bool = False
) -> Path | None:
    """Load model, optimizer, scheduler, precision, progress, metrics and callback state
    from a checkpoint. The RNG state is kept aside for ``apply_pending_rng``.

    ``weights_only=True`` loads only the model weights (from a full or a weights-only
    checkpoint) and starts a fresh run from them: new optimizer, step 0. That is the way
    to continue with another optimizer class."""
    path = resolve_resume_path(trainer, resume)
    if path is None:
        return None
    checkpoint = trainer.strategy.load_checkpoint(path)
    if weights_only:
        trainer.strategy.load_model_state_dict(trainer.model, checkpoint.model_state)
        return path
    if checkpoint.trainer_state is None:
        raise ValueError(
            f"{path} is a weights-only checkpoint: it has no optimizer or progress "
            "state, so training cannot resume from it. Load it with "
            "deepseek.checkpoint.load_weights(model, path), or save full checkpoints "
            "(ModelCheckpoint(save_weights_only=False))"
        )
    state = checkpoint.trainer_state
    configured = [_configured_hparams(opt) for opt in trainer.optimizers]
    _check_optimizers(trainer, state, path)
    trainer.strategy.load_model_state_dict(trainer.model, checkpoint.model_state)
    _load_optimizer_states(trainer, state["optimizer"], path)
    if trainer.scheduler is not None and state.get("scheduler") is not None:
        trainer.scheduler.load_state_dict(state["scheduler"])
    _report_changed_settings(trainer, state, configured, path)
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


# Optimizer hyper-parameters a resumed run takes from its own arguments rather than from
# the checkpoint: changing them mid-run is well defined (the moments stay valid).
APPLIED_ON_RESUME = ("lr", "weight_decay")
_NOT_HPARAMS = {"params", "initial_lr", "param_names"}


def _configured_hparams(optimizer: Any) -> list[dict[str, Any]]:
    """Each group's hyper-parameters as this run configured them (before any scheduler
    changed ``lr``: schedulers keep the configured value as ``initial_lr``)."""
    groups = []
    for group in optimizer.param_groups:
        values = {k: v for k, v in group.items() if k not in _NOT_HPARAMS}
        values["lr"] = group.get("initial_lr", group.get("lr"))
        groups.append(values)
    return groups


def _check_optimizers(trainer: Trainer, state: dict[str, Any], path: Path) -> None:
    """A different optimizer class cannot take over the saved one's state: one clear error
    instead of a KeyError from inside its step."""
    saved = (state.get("settings") or {}).get("optimizers")
    states = state["optimizer"] if isinstance(state["optimizer"], list) else [state["optimizer"]]
    for i, optimizer in enumerate(trainer.optimizers):
        now = _class_name(optimizer)
        before = saved[i] if isinstance(saved, list) and i < len(saved) else None
        if before is None and i < len(states) and isinstance(states[i], dict):
            # Older checkpoints: the hyper-parameter names tell the class apart.
            saved_keys = {k for g in states[i].get("param_groups", []) for k in g}
            now_keys = {k for g in optimizer.param_groups for k in g}
            if saved_keys and (saved_keys ^ now_keys) - _NOT_HPARAMS - {"lr"}:
                before = f"another optimizer (hyper-parameters {sorted(saved_keys - _NOT_HPARAMS)})"
        if before is not None and before != now:
            raise ValueError(
                f"{path} was saved with optimizer {before}, but this run uses {now}: the "
                "saved optimizer state (moments, step counts) does not apply to another "
                f"optimizer. Resume with {before.rsplit('.', 1)[-1]}, or start a new run from "
                "the weights only (weights_only resume: "
                "deepseek.checkpoint.load_weights(model, path), then fit without resume)"
            )


def _report_changed_settings(
    trainer: Trainer, state: dict[str, Any], configured: list[list[dict[str, Any]]], path: Path
) -> None:
    """Say what differs from the checkpoint; apply the new lr / weight decay."""
    changes = []
    for i, (optimizer, groups) in enumerate(zip(trainer.optimizers, configured)):
        label = "optimizer" if len(trainer.optimizers) == 1 else f"optimizer {i}"
        for g, (group, wanted) in enumerate(zip(optimizer.param_groups, groups)):
            where = label if len(optimizer.param_groups) == 1 else f"{label} group {g}"
            for key, new in wanted.items():
                old = group.get("initial_lr", group.get(key)) if key == "lr" else group.get(key)
                if key not in group or _same(old, new):
                    continue
                if key in APPLIED_ON_RESUME:
                    _apply(trainer, group, g, key, old, new)
                    changes.append(f"{where} {key}: {old} -> {new} (applied)")
                else:
                    changes.append(
                        f"{where} {key}: the checkpoint's {old} kept (this run asked for {new}; "
                        f"only {' and '.join(APPLIED_ON_RESUME)} change on resume)"
                    )
    saved = state.get("settings") or {}
    now = run_settings(trainer)
    for key, note in (
        ("batch_size", "the position inside the epoch is counted in batches of the new size"),
        ("accumulate_grad_batches", "steps from now on accumulate the new number of batches"),
        ("world_size", "each process now sees a different share of every epoch"),
    ):
        if saved.get(key) is not None and now[key] is not None and saved[key] != now[key]:
            changes.append(f"{key}: {saved[key]} -> {now[key]} ({note})")
    if changes:
        warnings.warn(
            f"resuming from {path} with settings that differ from the checkpoint's:\n  "
            + "\n  ".join(changes),
            stacklevel=5,
        )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except (TypeError, RuntimeError):
        return a is b


def _apply(
    trainer: Trainer, group: dict[str, Any], index: int, key: str, old: Any, new: Any
) -> None:
    if key != "lr":
        group[key] = new
        return
    scheduler = trainer.scheduler
    if "initial_lr" in group and isinstance(old, int | float) and old:
        # A scheduler scales the configured lr: keep its position, change the base.
        group["lr"] = group["lr"] * new / old
        group["initial_lr"] = new
        base_lrs = getattr(scheduler, "base_lrs", None)
        if isinstance(base_lrs, list) and index < len(base_lrs):
            base_lrs[index] = new
    else:
        group["lr"] = new


def apply_pending_rng(trainer: Trainer, *, iterator_created: bool) -> None:
    """Restore the resumed RNG state at the point of the epoch where it was captured:
    before the epoch's iterator exists (epoch-end checkpoints) or after (mid-epoch)."""
    if trainer._pending_rng is None or trainer._rng_after_iterator != iterator_created:
        return
    ckpt.set_rng_state(trainer._pending_rng)
    trainer._pending_rng = None
