"""The step contract: how a batch becomes a loss (and values to log).

A training micro-batch's loss comes from, in order:

1. ``model.training_step(batch)`` or ``model.training_step(batch, batch_idx)``, returning
   a scalar loss or a dict with ``"loss"`` plus any other values to log (logged as
   ``train_<key>``);
2. ``loss_fn(output, target)`` with ``output = model(*batch[:-1])``, ``target = batch[-1]``;
3. the model's own output: a scalar tensor, ``output.loss`` or ``output["loss"]``
   (dict batches are passed as ``model(**batch)``).

``validation_step`` follows the same rules (extra keys logged as ``val_<key>``), and
``predict_step(batch[, batch_idx])`` returns anything.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from deepseek.nn.wrappers import register_wrapper_type

if TYPE_CHECKING:
    from deepseek.training.trainer import Trainer

STEP_METHODS = ("training_step", "validation_step", "predict_step")


class StepDispatch(nn.Module):
    """Routes ``model(batch, "training_step", batch_idx)`` to ``model.training_step(batch,
    batch_idx)`` (or ``(batch)`` when the method takes one argument) and any other call to
    the model's forward, so that wrappers which act in ``forward`` (DDP's gradient sync,
    torch.compile) also see the step methods. ``state_dict`` keys and ``unwrap`` see
    through it."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self._takes_idx: dict[str, bool] = {}
        self._register_state_dict_hook(_strip_module_prefix)
        self._register_load_state_dict_pre_hook(_add_module_prefix)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if 2 <= len(args) <= 3 and isinstance(args[1], str) and args[1] in STEP_METHODS:
            method = getattr(self.module, args[1])
            takes_idx = self._takes_idx.get(args[1])
            if takes_idx is None:
                takes_idx = self._takes_idx[args[1]] = _takes_batch_idx(method, args[1])
            if takes_idx:
                return method(args[0], args[2] if len(args) == 3 else 0)
            return method(args[0])
        return self.module(*args, **kwargs)


register_wrapper_type(StepDispatch, "module")


def _takes_batch_idx(method: Callable[..., Any], name: str) -> bool:
    try:
        params = list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if len(required) > 2 or not positional:
        raise TypeError(
            f"{name} must take (batch) or (batch, batch_idx); it takes "
            f"({', '.join(p.name for p in params)})"
        )
    return len(positional) >= 2


def _strip_module_prefix(module: nn.Module, state: dict, prefix: str, local: Any) -> None:
    for key in list(state):
        if key.startswith(prefix + "module."):
            state[prefix + key[len(prefix) + len("module.") :]] = state.pop(key)


def _add_module_prefix(state: dict, prefix: str, *args: Any) -> None:
    for key in list(state):
        if key.startswith(prefix) and not key.startswith(prefix + "module."):
            state[prefix + "module." + key[len(prefix) :]] = state.pop(key)


# -- computing losses ----------------------------------------------------------------------


def forward(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (list, tuple)):
        return model(*inputs)
    return model(inputs)


def split_batch(batch: Any) -> tuple[Any, Any]:
    """``(inputs, target)`` of ``(x, y)`` / ``(x1, x2, ..., y)`` batches, else ``(batch, None)``."""
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        inputs = batch[0] if len(batch) == 2 else tuple(batch[:-1])
        return inputs, batch[-1]
    return batch, None


def training_loss(trainer: Trainer, batch: Any, batch_idx: int) -> torch.Tensor:
    """The loss of one training micro-batch, by the contract in this module's docstring."""
    if trainer._has_step["training_step"]:
        # Through the wrappers' forward (StepDispatch), so DDP syncs the gradients.
        out = trainer.model(batch, "training_step", batch_idx)
        if isinstance(out, Mapping) and len(out) > 1:
            trainer._log_step_extras(out, "train_")
        return extract_loss(out, "training_step")
    if trainer.loss_fn is not None:
        inputs, target = split_batch(batch)
        if target is None:
            raise ValueError(
                "loss_fn needs (inputs, target) batches, but a batch is a "
                f"{type(batch).__name__}; return (inputs, target) from the dataset"
            )
        return check_loss_value(trainer.loss_fn(forward(trainer.model, inputs), target))
    if not trainer._forward_checked:  # inspect.signature once, not per step
        check_forward_takes(trainer.unwrapped_model, batch)
        trainer._forward_checked = True
    return extract_loss(forward(trainer.model, batch), "the model's forward")


def validation_values(
    trainer: Trainer, batch: Any, batch_idx: int
) -> tuple[dict[str, torch.Tensor], Any, Any]:
    """``(values to average, output, target)`` of one validation batch; ``output`` and
    ``target`` feed accumulating metrics (``None`` when the step contract gives none)."""
    user_model = trainer.unwrapped_model
    if hasattr(user_model, "validation_step"):
        out = trainer.model(batch, "validation_step", batch_idx)
        if isinstance(out, Mapping):
            return {k.removeprefix("val_"): torch.as_tensor(v) for k, v in out.items()}, None, None
        return {"loss": extract_loss(out, "validation_step")}, None, None
    if trainer.loss_fn is not None:
        inputs, target = split_batch(batch)
        output = forward(trainer.model, inputs)
        return {"loss": check_loss_value(trainer.loss_fn(output, target))}, output, target
    if hasattr(user_model, "training_step"):
        out = trainer.model(batch, "training_step", batch_idx)
        values = {"loss": extract_loss(out, "training_step")}
        if isinstance(out, Mapping):
            values.update(
                {k: torch.as_tensor(v) for k, v in out.items() if k != "loss" and _loggable(v)}
            )
        return values, None, None
    output = forward(trainer.model, batch)
    target = None
    if isinstance(batch, Mapping):
        target = batch.get("labels", batch.get("label"))
    return {"loss": extract_loss(output, "the model's forward")}, output, target


def predict_output(trainer: Trainer, batch: Any, batch_idx: int) -> Any:
    if hasattr(trainer.unwrapped_model, "predict_step"):
        return trainer.model(batch, "predict_step", batch_idx)
    inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
    return forward(trainer.model, inputs)


def _loggable(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() == 1
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- checks --------------------------------------------------------------------------------


def check_loss_fn(loss_fn: Any) -> None:
    """A ``loss_fn`` must be callable as ``loss_fn(output, target)``: checked once, up front."""
    if loss_fn is None:
        return
    if not callable(loss_fn):
        raise TypeError(
            f"loss_fn must be a callable loss_fn(output, target), got {type(loss_fn).__name__}"
        )
    if isinstance(loss_fn, type):
        raise TypeError(
            f"loss_fn is the class {loss_fn.__name__}; pass an instance "
            f"(loss_fn={loss_fn.__name__}()) or a function such as "
            "torch.nn.functional.cross_entropy"
        )
    try:
        signature = inspect.signature(loss_fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: trust them
    try:
        signature.bind(object(), object())
    except TypeError:
        params = ", ".join(str(p) for p in signature.parameters.values())
        name = getattr(loss_fn, "__name__", type(loss_fn).__name__)
        raise TypeError(
            f"loss_fn {name}({params}) cannot be called as loss_fn(output, target); "
            "wrap it: loss_fn=lambda output, target: ..."
        ) from None


def check_loss_value(loss: Any) -> torch.Tensor:
    """The value ``loss_fn`` returned must be a scalar floating tensor."""
    if isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.is_floating_point():
        return loss if loss.dim() == 0 else loss.reshape(())
    if isinstance(loss, torch.Tensor):
        raise TypeError(
            f"loss_fn returned a tensor of shape {tuple(loss.shape)} and dtype {loss.dtype}, "
            "not a scalar loss; reduce it (e.g. .mean(), or reduction='mean')"
        )
    raise TypeError(
        f"loss_fn returned a {type(loss).__name__}, not a tensor; return a scalar tensor "
        "so the loss can be back-propagated (a Python float has no gradient)"
    )


def check_forward_takes(model: nn.Module, batch: Any) -> None:
    """A (inputs, target) batch fed to a one-input model means loss_fn was forgotten."""
    if not isinstance(batch, (list, tuple)):
        return
    params = inspect.signature(model.forward).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(batch) > len(positional):
        raise TypeError(
            f"{type(model).__name__}.forward takes {len(positional)} input(s) but a batch has "
            f"{len(batch)} elements, and there is no loss: pass loss_fn= to the Trainer "
            "(batches are then (inputs, target)), or define training_step(batch) on the model"
        )


def extract_loss(output: Any, where: str) -> torch.Tensor:
    loss = output
    if isinstance(output, Mapping):
        loss = output.get("loss")
    elif not isinstance(output, torch.Tensor) and hasattr(output, "loss"):
        loss = output.loss
    if isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.is_floating_point():
        return loss if loss.dim() == 0 else loss.reshape(())
    shape = f" of shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else ""
    raise TypeError(
        f"{where} returned a {type(output).__name__}{shape}, not a loss. Pass loss_fn= "
        "to the Trainer, return a scalar loss (or an object with .loss / a dict with "
        "'loss'), or define training_step(batch) on the model"
    )


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class NonFiniteLossGuard:
    """The ``on_nan_loss`` policy, without a host-device sync per micro-batch.

    ``"raise"``: each micro-batch's detached loss is kept (no tensor op per step) and
    summed on its device at a logging point (NaN and inf propagate through a sum); the sum
    is read only at those points (when
    ``train_loss`` is read from ``trainer.metrics``, before validation, before a
    checkpoint is written, at each epoch's end), which raise ``FloatingPointError``
    naming the steps in between. ``"skip"`` must decide before ``backward`` whether to
    skip, so it reads every loss on the host (one sync per micro-batch on a GPU).
    ``None`` checks nothing.
    """

    def __init__(self, policy: str | None) -> None:
        self.policy = policy
        self._sum: torch.Tensor | None = None
        self._pending: list[torch.Tensor] = []
        self._since_step = 0

    def observe(self, trainer: Trainer, loss: torch.Tensor) -> bool:
        """Record ``loss`` (detached); True when this micro-batch must be skipped (``skip``)."""
        if self.policy == "raise":
            pending = self._pending
            pending.append(loss)  # no tensor op here: the check stacks them later
            if len(pending) >= 1024:  # bound the memory between checks
                self._fold()
            return False
        if self.policy is None:
            return False
        value = loss.item()
        if math.isfinite(value):
            return False
        trainer.nan_losses_skipped += 1
        import warnings

        warnings.warn(
            f"skipping a batch whose loss is {value} at step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}, batch {trainer.batch_idx})",
            stacklevel=4,
        )
        return True

    def _fold(self) -> None:
        total = torch.stack([t.float() for t in self._pending]).sum()
        self._sum = total if self._sum is None else self._sum + total
        self._pending.clear()

    def check(self, trainer: Trainer) -> None:
        """Read the accumulated flag (one sync) and raise if a loss was not finite."""
        if self._pending:
            self._fold()
        if self._sum is None:
            return
        total, self._sum = self._sum, None
        since, self._since_step = self._since_step, trainer.global_step
        if math.isfinite(float(total)):
            return
        where = (
            f"at step {since}"
            if trainer.global_step <= since + 1
            else f"between step {since} and step {trainer.global_step}"
        )
        raise FloatingPointError(
            f"the loss became nan/inf {where} (epoch {trainer.current_epoch}). Lower the "
            "learning rate, clip gradients (gradient_clip_norm=1.0), check the data, or pass "
            "on_nan_loss='skip' to skip such batches"
        )
