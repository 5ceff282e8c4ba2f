"""Iterative prune-then-finetune as a Trainer callback (``iterative_pruning``).

Pruning a large fraction at once loses more accuracy than reaching it in steps with
training in between. :class:`IterativePruning` removes channels at the start of chosen
epochs until the target fraction is reached; each step aims at a share of the *original*
channel counts (step k of N keeps ``1 - amount * k / N`` of each layer), so rounding never
accumulates. Physical pruning replaces parameter tensors, so the Trainer's optimizer (and
its scheduler) is rebuilt after each step with ``Trainer.rebuild_optimizer``.

Resuming: a checkpoint of a pruned run holds smaller tensors than the configured model.
While fitting, the callback shrinks the model to the checkpoint's shapes as the weights
are loaded (before the optimizer state, which then fits), so ``resume`` continues the
run exactly where it stopped, and later steps carry on from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from deepseek.callbacks.base import Callback
from deepseek.pruning.physical import PRUNABLE_ROOTS, check_amount, output_layers, prune
from deepseek.pruning.resize import shrink_to_state


class IterativePruning(Callback):
    """Prune ``amount`` of the channels in ``len(epochs)`` steps, at the start of each
    listed epoch (0-based), finetuning in between.

    ``example_shape`` gives the shape of an example input (batch first); without it the
    first sample of the training data is used. ``global_pruning`` and ``protected`` are
    :func:`deepseek.pruning.prune`'s. Each step's sizes are in ``history``.

    >>> cb = IterativePruning(amount=0.5, epochs=[1, 3])
    >>> cb.kept_fraction(1), cb.kept_fraction(2)
    (0.75, 0.5)
    """

    def __init__(
        self,
        amount: float = 0.5,
        epochs: Sequence[int] = (1,),
        *,
        example_shape: Sequence[int] | None = None,
        global_pruning: bool = False,
        protected: Sequence[str] = (),
        verbose: bool = True,
    ) -> None:
        self.amount = check_amount(amount)
        if isinstance(epochs, int):
            epochs = [epochs]
        epochs = list(epochs)
        if not epochs or any(
            isinstance(e, bool) or not isinstance(e, int) or e < 0 for e in epochs
        ):
            raise ValueError(f"epochs must be a non-empty list of epochs >= 0, got {epochs!r}")
        if len(set(epochs)) != len(epochs) or epochs != sorted(epochs):
            raise ValueError(f"epochs must be increasing with no repeats, got {epochs!r}")
        self.epochs = epochs
        self.example_shape = tuple(example_shape) if example_shape is not None else None
        self.global_pruning = global_pruning
        self.protected = tuple([protected] if isinstance(protected, str) else protected)
        self.verbose = verbose
        self.steps_done = 0
        self.history: list[dict[str, Any]] = []
        self._original: dict[str, int] | None = None  # layer name -> output channels
        self._hook: Any = None

    def kept_fraction(self, step: int) -> float:
        """The fraction of each layer's original channels kept after step ``step`` (1-based)."""
        return 1.0 - self.amount * step / len(self.epochs)

    # -- the Trainer's hooks ---------------------------------------------------------------
    def setup(self, trainer: Any, stage: str) -> None:
        if stage != "fit":
            return
        model = trainer.unwrapped_model
        if self._original is None:  # the configured, unpruned sizes
            self._original = {
                name: m.weight.shape[0]
                for name, m in model.named_modules()
                if isinstance(m, PRUNABLE_ROOTS)
            }
        if self._hook is None:
            self._hook = model.register_load_state_dict_pre_hook(
                lambda module, state, prefix, *args: self._shrink_for(trainer, state, prefix)
            )

    def teardown(self, trainer: Any, stage: str) -> None:
        if stage == "fit" and self._hook is not None:
            self._hook.remove()
            self._hook = None

    def on_train_epoch_start(self, trainer: Any) -> None:
        if trainer.current_epoch not in self.epochs:
            return
        step = self.epochs.index(trainer.current_epoch) + 1
        if step <= self.steps_done:  # already taken before a resume
            return
        model = trainer.unwrapped_model
        inputs = self._example(trainer)
        before = sum(p.numel() for p in model.parameters())
        ratios, protected = self._step_ratios(model, inputs, step)
        if ratios:
            with trainer.rebuild_optimizer():
                prune(
                    model,
                    amount=max(ratios.values()),
                    example_inputs=inputs,
                    global_pruning=self.global_pruning,
                    layer_amounts=ratios,
                    protected=protected,
                    inplace=True,
                )
        after = sum(p.numel() for p in model.parameters())
        self.steps_done = step
        self.history.append({"epoch": trainer.current_epoch, "params": after})
        if self.verbose and trainer.is_global_zero:
            print(
                f"iterative pruning step {step}/{len(self.epochs)} at epoch "
                f"{trainer.current_epoch}: {before:,} -> {after:,} parameters "
                f"({self.kept_fraction(step):.0%} of each layer's channels kept)"
            )

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"steps_done": self.steps_done, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps_done = int(state.get("steps_done", 0))
        self.history = list(state.get("history", []))

    # -- helpers ---------------------------------------------------------------------------
    def _example(self, trainer: Any) -> tuple[torch.Tensor, ...]:
        if self.example_shape is not None:
            return (torch.randn(*self.example_shape),)
        data = trainer.train_data
        dataset = getattr(data, "dataset", data)
        try:
            sample = dataset[0]  # not the loader: drawing a batch would move the RNG
        except (TypeError, IndexError, KeyError) as exc:
            raise ValueError(
                "iterative_pruning needs an example input: give example_shape "
                "(e.g. [1, 3, 32, 32]) when the training data is not indexable"
            ) from exc
        x = sample[0] if isinstance(sample, (tuple, list)) else sample
        if not isinstance(x, torch.Tensor):
            raise ValueError("iterative_pruning: give example_shape for non-tensor inputs")
        return (x.unsqueeze(0),)

    def _step_ratios(
        self, model: nn.Module, inputs: tuple[torch.Tensor, ...], step: int
    ) -> tuple[dict[str, float], tuple[str, ...]]:
        """Per-layer fractions of the *current* channels to remove so that each layer keeps
        its share of the original ones; layers already there are protected this step."""
        assert self._original is not None
        was_training = model.training
        model.eval()  # the tracing forward must not move batch-norm statistics
        try:
            heads = {id(m) for m in output_layers(model, inputs)}
        finally:
            model.train(was_training)
        ratios, protected = {}, list(self.protected)
        for name, module in model.named_modules():
            if not isinstance(module, PRUNABLE_ROOTS) or name in self.protected:
                continue
            if id(module) in heads or name not in self._original:
                continue
            have = module.weight.shape[0]
            target = max(1, round(self._original[name] * self.kept_fraction(step)))
            if target < have:
                # +0.5: torch-pruning floors the kept count, so aim mid-channel.
                ratios[name] = 1.0 - (target + 0.5) / have
            else:
                protected.append(name)
        return ratios, tuple(protected)

    def _shrink_for(self, trainer: Any, state: dict[str, Any], prefix: str) -> None:
        """Before a checkpoint's weights load: shrink the model to their shapes."""
        model = trainer.unwrapped_model
        local = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        current = model.state_dict()
        if not any(
            k in current and v.dim() > 0 and v.shape[0] < current[k].shape[0]
            for k, v in local.items()
        ):
            return
        with trainer.rebuild_optimizer():
            shrink_to_state(model, local, self._example(trainer))
