"""``self.log(...)`` inside a plain ``nn.Module``'s steps, and ``trainer.log(...)``.

While a Trainer runs a model it is the *active* trainer; ``log`` sends values to it.
A model that defines no ``log`` of its own gets a ``StepLog`` attribute, so
``self.log("acc", acc)`` works in ``training_step`` / ``validation_step``; called when no
Trainer is running, it says so.

    >>> import torch
    >>> from deepseek.training.step_log import StepLog
    >>> try:
    ...     StepLog()("acc", torch.tensor(1.0))
    ... except RuntimeError as exc:
    ...     print(str(exc)[:60])
    self.log('acc', ...) works only while a deepseek Trainer run
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from deepseek.training.trainer import Trainer

_ACTIVE: list[Trainer] = []


@contextlib.contextmanager
def active(trainer: Trainer) -> Iterator[None]:
    """Make ``trainer`` the one ``StepLog`` sends values to, for the duration."""
    _ACTIVE.append(trainer)
    try:
        yield
    finally:
        _ACTIVE.remove(trainer)


def current_trainer() -> Trainer | None:
    """The Trainer running a model now (the innermost one), or None."""
    return _ACTIVE[-1] if _ACTIVE else None


class StepLog:
    """Callable attached to a user model as ``model.log``: forwards to the running Trainer."""

    def __call__(
        self,
        name: str,
        value: Any,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        prog_bar: bool = False,
    ) -> None:
        trainer = current_trainer()
        if trainer is None:
            raise RuntimeError(
                f"self.log({name!r}, ...) works only while a deepseek Trainer runs this model "
                "(inside training_step / validation_step during fit, validate or test); call "
                "trainer.log(...) from a callback"
            )
        trainer.log(name, value, on_step=on_step, on_epoch=on_epoch, prog_bar=prog_bar)

    def __repr__(self) -> str:
        return "StepLog()"


def _running(what: str) -> Trainer:
    trainer = current_trainer()
    if trainer is None:
        raise RuntimeError(f"self.{what}() works only while a deepseek Trainer runs this model")
    return trainer


class Optimizers:
    """``self.optimizers()`` in manual optimization: the running Trainer's optimizer(s)."""

    def __call__(self) -> Any:
        optimizers = _running("optimizers").optimizers
        return optimizers[0] if len(optimizers) == 1 else list(optimizers)


class ManualBackward:
    """``self.manual_backward(loss)``: backward through the strategy and precision
    (loss scaling), as the automatic path does."""

    def __call__(self, loss: torch.Tensor) -> None:
        trainer = _running("manual_backward")
        trainer.strategy.backward(trainer, loss)


def attach(model: torch.nn.Module) -> None:
    """Give ``model`` a ``log`` attribute unless it has one (its own method, or ours)."""
    if getattr(type(model), "log", None) is None and "log" not in vars(model):
        object.__setattr__(model, "log", StepLog())


class EpochAccumulator:
    """Running means of values logged with ``on_epoch=True`` (kept on their device)."""

    def __init__(self) -> None:
        self._sums: dict[str, list[Any]] = {}

    def add(self, name: str, value: torch.Tensor | float) -> None:
        entry = self._sums.get(name)
        if entry is None:
            self._sums[name] = [value, 1]
        else:
            entry[0] = entry[0] + value
            entry[1] += 1

    def flush(self) -> dict[str, float]:
        out = {name: float(total) / count for name, (total, count) in self._sums.items()}
        self._sums.clear()
        return out
