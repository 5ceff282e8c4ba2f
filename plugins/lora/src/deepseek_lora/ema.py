"""``ema_weights``: an exponential moving average of the trainable weights.

After every optimizer step, ``ema = decay * ema + (1 - decay) * weight`` for each
trainable parameter (``Tensor.lerp_``). Validation runs on the averaged weights
(``validate_with_ema``), and at the end of ``fit`` they are copied into the model
(``apply_at_end``). The average is part of the Trainer's checkpoints.

>>> import torch, deepseek as ds
>>> data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
>>> ema = EMAWeights(decay=0.9, apply_at_end=False)
>>> trainer = ds.Trainer(torch.nn.Linear(4, 1), torch.optim.SGD, optimizer_kwargs={"lr": 0.1},
...                      train_data=data, batch_size=8, max_epochs=1, callbacks=[ema],
...                      loss_fn=torch.nn.functional.mse_loss, enable_progress_bar=False,
...                      default_root_dir=None)
>>> trainer.fit()
>>> ema.updates, sorted(ema.average)
(4, ['bias', 'weight'])
"""

from __future__ import annotations

from typing import Any

import torch

from deepseek.callbacks import Callback
from deepseek.config import ConfigError


class EMAWeights(Callback):
    """Keep an exponential moving average of the trainable parameters.

    Args:
        decay: weight of the old average at each update, in ``[0, 1)`` (0.999 is common).
        every_n_steps: update after every N-th optimizer step.
        validate_with_ema: run validation on the averaged weights (swapped back after).
        apply_at_end: copy the averaged weights into the model when ``fit`` ends.
    """

    def __init__(
        self,
        decay: float = 0.999,
        every_n_steps: int = 1,
        validate_with_ema: bool = True,
        apply_at_end: bool = True,
    ) -> None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
            raise ConfigError(f"ema_weights: decay must be in [0, 1) (e.g. 0.999), got {decay!r}")
        if (
            isinstance(every_n_steps, bool)
            or not isinstance(every_n_steps, int)
            or every_n_steps < 1
        ):
            raise ConfigError(
                f"ema_weights: every_n_steps must be a positive integer, got {every_n_steps!r}"
            )
        self.decay, self.every_n_steps = float(decay), every_n_steps
        self.validate_with_ema, self.apply_at_end = validate_with_ema, apply_at_end
        self.average: dict[str, torch.Tensor] = {}
        self.updates = 0
        self._last_step = -1
        self._backup: dict[str, torch.Tensor] | None = None

    def _params(self, trainer: Any) -> dict[str, torch.nn.Parameter]:
        model = trainer.unwrapped_model
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def on_fit_start(self, trainer: Any) -> None:
        params = self._params(trainer)
        if not self.average:  # fresh (a resumed run loaded its average already)
            self.average = {n: p.detach().clone() for n, p in params.items()}
        self._last_step = trainer.global_step

    @torch.no_grad()
    def on_train_batch_end(self, trainer: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._last_step:  # a micro-batch of gradient accumulation
            return
        self._last_step = step
        if step % self.every_n_steps:
            return
        for name, param in self._params(trainer).items():
            self.average[name].lerp_(param.detach(), 1.0 - self.decay)
        self.updates += 1

    @torch.no_grad()
    def _swap_in(self, trainer: Any) -> None:
        params = self._params(trainer)
        self._backup = {n: p.detach().clone() for n, p in params.items()}
        for name, param in params.items():
            param.copy_(self.average[name])

    def on_validation_start(self, trainer: Any) -> None:
        if self.validate_with_ema and self.average:
            self._swap_in(trainer)

    @torch.no_grad()
    def on_validation_end(self, trainer: Any) -> None:
        if self._backup is not None:
            for name, param in self._params(trainer).items():
                param.copy_(self._backup[name])
            self._backup = None

    @torch.no_grad()
    def on_fit_end(self, trainer: Any) -> None:
        if self.apply_at_end and self.average:
            for name, param in self._params(trainer).items():
                param.copy_(self.average[name])

    def state_dict(self) -> dict[str, Any]:
        return {"average": dict(self.average), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.average = {k: v.clone() for k, v in state.get("average", {}).items()}
        self.updates = int(state.get("updates", 0))
