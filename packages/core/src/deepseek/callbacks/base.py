"""The callback protocol: plain objects whose ``on_*`` methods the Trainer calls."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from deepseek.training import Trainer


class Callback:
    """Base class for Trainer callbacks; override only the hooks you need.

    Hooks receive the ``Trainer``, whose public attributes are the run's state:
    ``trainer.model``, ``.optimizer``, ``.current_epoch`` (0-based), ``.global_step``
    (optimizer steps taken), ``.batch_idx`` (within the epoch), ``.metrics`` (latest
    values by name: ``train_loss``, ``val_loss``, ``lr``, ...), ``.max_epochs``,
    ``.max_steps``, ``.should_stop`` (set it to end the fit after the current step),
    ``.default_root_dir`` and ``.is_global_zero``.

    State that must survive a restart is returned by ``state_dict`` and saved in every
    full checkpoint under ``state_key``; ``load_state_dict`` gets it back on resume.
    Values must be plain Python data or tensors (checkpoints load with
    ``torch.load(weights_only=True)``).

    Example:
        >>> class CountSteps(Callback):
        ...     def __init__(self):
        ...         self.steps = 0
        ...     def on_train_batch_end(self, trainer, outputs, batch, batch_idx):
        ...         self.steps += 1
        ...     def state_dict(self):
        ...         return {"steps": self.steps}
        ...     def load_state_dict(self, state):
        ...         self.steps = state["steps"]
    """

    @property
    def state_key(self) -> str:
        """Key of this callback's state in a checkpoint; unique per class by default."""
        return type(self).__qualname__

    def setup(self, trainer: Trainer, stage: str) -> None:
        """Called once before ``fit``/``validate``/``predict`` (``stage`` names which)."""

    def teardown(self, trainer: Trainer, stage: str) -> None:
        """Called once after ``fit``/``validate``/``predict``, also after an exception."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...

    def on_train_epoch_start(self, trainer: Trainer) -> None: ...

    def on_train_epoch_end(self, trainer: Trainer) -> None: ...

    def on_train_batch_start(self, trainer: Trainer, batch: Any, batch_idx: int) -> None: ...

    def on_train_batch_end(
        self, trainer: Trainer, outputs: dict[str, Any], batch: Any, batch_idx: int
    ) -> None:
        """``outputs["loss"]`` is the detached loss of this micro-batch (unscaled)."""

    def on_train_loss(
        self, trainer: Trainer, loss: torch.Tensor, batch: Any
    ) -> torch.Tensor | None:
        """The micro-batch's loss right after it is computed, before the NaN check,
        accumulation scaling and ``backward``. Return a tensor to replace it (e.g. ``loss
        + 0.01 * aux_loss``; ``train_loss`` logs what is returned) or None to keep it.
        The Trainer calls this only on callbacks that override it."""
        return None

    def on_before_optimizer_step(self, trainer: Trainer, optimizer: Any) -> None:
        """Gradients are final (unscaled, accumulated) and not yet clipped."""

    def on_validation_start(self, trainer: Trainer) -> None: ...

    def on_validation_end(self, trainer: Trainer) -> None:
        """``trainer.metrics`` now holds this validation's results (``val_loss``, ...)."""

    def on_save_checkpoint(self, trainer: Trainer, path: str) -> None:
        """A checkpoint was just written to ``path``."""

    def on_load_checkpoint(self, trainer: Trainer, path: str) -> None:
        """The run was just restored from ``path``."""

    def on_exception(self, trainer: Trainer, exception: BaseException) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
