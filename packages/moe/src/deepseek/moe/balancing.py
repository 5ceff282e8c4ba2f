"""Load balancing in training: auxiliary losses with coefficients, auxiliary-loss-free
bias updates, load metrics and per-epoch load plots (``MoELoadBalancing``)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from deepseek.callbacks.base import Callback
from deepseek.moe.layer import MoELayer

if TYPE_CHECKING:
    from deepseek.training import Trainer

# Coefficient names, in the order the losses are summed.
AUX_LOSS_NAMES = ("aux_loss", "device_aux_loss", "z_loss")


def moe_layers(model: nn.Module) -> list[tuple[str, MoELayer]]:
    """Every ``MoELayer`` in ``model`` with its qualified name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, MoELayer)]


def auxiliary_loss(
    model: nn.Module,
    aux_loss_coef: float = 0.0,
    device_aux_loss_coef: float = 0.0,
    z_loss_coef: float = 0.0,
) -> torch.Tensor:
    """The weighted sum of the balancing losses of every MoE layer's last forward.

    >>> import torch
    >>> layer = MoELayer(8, 16, num_experts=4)
    >>> _ = layer(torch.randn(6, 8))
    >>> loss = auxiliary_loss(layer, aux_loss_coef=0.01, z_loss_coef=0.001)
    >>> torch.allclose(loss, 0.01 * layer.aux_loss + 0.001 * layer.z_loss)
    True
    """
    coefs = (aux_loss_coef, device_aux_loss_coef, z_loss_coef)
    total: torch.Tensor | None = None
    for _, layer in moe_layers(model):
        for name, coef in zip(AUX_LOSS_NAMES, coefs):
            value = getattr(layer, name)
            if coef and value is not None:
                total = coef * value if total is None else total + coef * value
    if total is None:
        parameter = next(model.parameters(), None)
        return torch.zeros((), device=parameter.device if parameter is not None else None)
    return total


class MoELoadBalancing(Callback):
    """Balances a model's MoE layers during ``Trainer.fit``.

    - adds ``aux_loss_coef * aux_loss + device_aux_loss_coef * device_aux_loss +
      z_loss_coef * z_loss`` of every MoE layer to the training loss. A model that adds
      them itself (it has an ``aux_loss_coefs`` dict, as ``MoETransformerLM`` and
      ``MoEClassifier`` do) gets the coefficients set instead, so nothing is counted twice;
    - with ``bias_update_rate > 0``, auxiliary-loss-free balancing: after every optimizer
      step each layer's selection bias moves by the rate towards balance, from the load
      seen since the previous step (summed over processes first, so that every rank keeps
      the same biases);
    - logs ``moe_load_ratio`` (max/mean expert load, averaged over layers),
      ``moe_max_load_ratio`` (worst layer), ``moe_aux_loss``, ``moe_z_loss`` and
      ``moe_dropped_fraction`` into ``trainer.metrics`` every ``log_every_n_steps`` steps
      (tensors: no host synchronisation), ``val_perplexity = exp(val_loss)`` after
      validation, and writes a load-per-expert plot per epoch to
      ``<default_root_dir>/moe_load/epoch_<n>.png`` (``plot=False`` turns it off).

    ``None`` leaves a coefficient as the model has it (0 for plain models).

    >>> cb = MoELoadBalancing(aux_loss_coef=0.01, z_loss_coef=1e-3, bias_update_rate=1e-3)
    """

    def __init__(
        self,
        aux_loss_coef: float | None = None,
        device_aux_loss_coef: float | None = None,
        z_loss_coef: float | None = None,
        bias_update_rate: float = 0.0,
        log_every_n_steps: int = 1,
        plot: bool = True,
    ) -> None:
        for name, value in (
            ("aux_loss_coef", aux_loss_coef),
            ("device_aux_loss_coef", device_aux_loss_coef),
            ("z_loss_coef", z_loss_coef),
            ("bias_update_rate", bias_update_rate),
        ):
            if value is not None and not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if isinstance(log_every_n_steps, bool) or not isinstance(log_every_n_steps, int):
            raise ValueError(f"log_every_n_steps must be a positive int, got {log_every_n_steps!r}")
        if log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be a positive int, got {log_every_n_steps}")
        self.coefs = {
            "aux_loss": aux_loss_coef,
            "device_aux_loss": device_aux_loss_coef,
            "z_loss": z_loss_coef,
        }
        self.bias_update_rate = float(bias_update_rate)
        self.log_every_n_steps = log_every_n_steps
        self.plot = plot
        self.layers: list[tuple[str, MoELayer]] = []
        self.history: list[dict[str, list[float]]] = []  # per epoch: layer -> load fractions
        self._adds_loss = False
        self._epoch_load: dict[str, torch.Tensor] = {}

    # -- setup -------------------------------------------------------------------------
    def setup(self, trainer: Trainer, stage: str) -> None:
        model = trainer.unwrapped_model
        self.layers = moe_layers(model)
        if not self.layers:
            raise ValueError(
                f"MoELoadBalancing: {type(model).__name__} has no deepseek.moe.MoELayer; "
                "remove the callback or use a model built from MoELayer"
            )
        given = {k: v for k, v in self.coefs.items() if v is not None}
        own = getattr(model, "aux_loss_coefs", None)
        if isinstance(own, dict):
            own.update(given)  # the model adds the losses itself
            self._adds_loss = False
        else:
            self._adds_loss = any(given.values())
            if self._adds_loss and not hasattr(Callback, "on_train_loss"):
                raise RuntimeError(
                    "MoELoadBalancing cannot add the auxiliary losses: this Trainer has no "
                    "on_train_loss hook. Add them in your training_step with "
                    "deepseek.moe.balancing.auxiliary_loss(model, ...)"
                )

    def on_train_loss(self, trainer: Trainer, loss: torch.Tensor, batch: Any) -> Any:
        if not self._adds_loss:
            return None
        coefs = {f"{k}_coef": v or 0.0 for k, v in self.coefs.items()}
        return loss + auxiliary_loss(trainer.unwrapped_model, **coefs).to(loss.dtype)

    # -- per step ----------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: Trainer) -> None:
        self._epoch_load = {}

    def on_train_batch_end(
        self, trainer: Trainer, outputs: Mapping[str, Any], batch: Any, batch_idx: int
    ) -> None:
        for name, layer in self.layers:
            if layer.expert_load is not None:
                previous = self._epoch_load.get(name)
                load = layer.expert_load
                self._epoch_load[name] = load if previous is None else previous + load
        if not trainer.optimizer_stepped:
            return
        if self.bias_update_rate > 0:
            for _, layer in self.layers:
                load = layer.load_since_update
                if trainer.strategy.world_size > 1:
                    load = trainer.strategy.reduce(load, "sum")
                layer.update_bias(self.bias_update_rate, load)
        if trainer.global_step % self.log_every_n_steps == 0:
            self._log(trainer)

    def _log(self, trainer: Trainer) -> None:
        done = [layer for _, layer in self.layers if layer.load_ratio is not None]
        if not done:
            return
        ratios = torch.stack([layer.load_ratio for layer in done])
        trainer.metrics["moe_load_ratio"] = ratios.mean()
        trainer.metrics["moe_max_load_ratio"] = ratios.max()
        trainer.metrics["moe_aux_loss"] = torch.stack(
            [layer.aux_loss.detach() for layer in done]
        ).mean()
        trainer.metrics["moe_z_loss"] = torch.stack(
            [layer.z_loss.detach() for layer in done]
        ).mean()
        assigned = sum(layer.expert_load.sum() for layer in done)
        dropped = sum(layer.dropped_tokens.float() for layer in done)
        trainer.metrics["moe_dropped_fraction"] = dropped / assigned.clamp_min(1.0)

    def on_validation_end(self, trainer: Trainer) -> None:
        if "val_loss" in trainer.metrics:
            loss = trainer.metrics["val_loss"]
            trainer.metrics["val_perplexity"] = math.exp(min(loss, 700.0))

    # -- per epoch ---------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: Trainer) -> None:
        loads = {}
        for name, load in self._epoch_load.items():
            total = float(load.sum())
            loads[name or "moe"] = [float(v) / total if total else 0.0 for v in load.tolist()]
        self.history.append(loads)
        if self.plot and loads and trainer.is_global_zero and trainer.default_root_dir is not None:
            path = (
                Path(trainer.default_root_dir) / "moe_load" / f"epoch_{trainer.current_epoch}.png"
            )
            plot_expert_load(loads, path, title=f"expert load, epoch {trainer.current_epoch}")

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))


def plot_expert_load(
    loads: Mapping[str, list[float]], path: str | Path, title: str = "expert load"
) -> Path | None:
    """One row per layer: the fraction of routed assignments each expert received; the
    dashed line is perfect balance. Returns the path, or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed: no expert-load plot", stacklevel=2)
        return None
    path = Path(path)
    rows = len(loads)
    fig, axes = plt.subplots(rows, 1, figsize=(7, 1.6 * rows + 0.6), squeeze=False)
    for ax, (name, fractions) in zip(axes[:, 0], loads.items()):
        ax.bar(range(len(fractions)), fractions)
        if fractions:
            ax.axhline(1.0 / len(fractions), color="k", linestyle="--", linewidth=0.8)
        ax.set_ylabel(name, rotation=0, ha="right", fontsize=8)
    axes[-1, 0].set_xlabel("expert")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
