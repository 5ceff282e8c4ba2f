"""Precision plugins: autocast plus loss scaling, one object per run.

The Trainer calls ``autocast()`` around the forward pass, ``backward(loss)``,
``unscale(optimizer)`` before clipping and ``step(optimizer)``, which returns False when
the step was skipped because gradients overflowed (fp16 only; counted in
``skipped_steps``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from deepseek.backends import Backend


class Precision:
    """Base class of precision plugins; on its own it is full precision (no autocast, no
    scaling). Subclasses set ``dtype`` for autocast and override the scaling hooks."""

    name = "fp32"
    dtype: torch.dtype | None = None

    def __init__(self, backend: Backend | None = None) -> None:
        self.device_type = backend.device_type if backend is not None else "cpu"
        self.skipped_steps = 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context the forward pass runs in (a no-op in full precision)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Make ``.grad`` hold true gradients (before clipping or inspecting them)."""

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        optimizer.step()
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped_steps = int(state.get("skipped_steps", 0))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FP32Precision(Precision):
    """Full precision (``precision="fp32"``): no autocast, no scaling."""

    name = "fp32"


class BF16MixedPrecision(Precision):
    """bf16 autocast. bf16 has fp32's exponent range, so no loss scaling is needed."""

    name = "bf16-mixed"
    dtype = torch.bfloat16


class FP16MixedPrecision(Precision):
    """fp16 autocast with loss scaling.

    ``loss_scale="dynamic"`` (default) uses ``torch.amp.GradScaler``: the scale grows
    while steps succeed and halves when gradients overflow. A number (``loss_scale=128``)
    is a static scale. Either way a step whose gradients contain inf/NaN is skipped and
    counted in ``skipped_steps``.
    """

    name = "fp16-mixed"
    dtype = torch.float16

    def __init__(
        self,
        backend: Backend | None = None,
        loss_scale: float | str = "dynamic",
        init_scale: float = 2.0**16,
        growth_interval: int = 2000,
    ) -> None:
        super().__init__(backend)
        if isinstance(loss_scale, str):
            if loss_scale.strip().lower() != "dynamic":
                raise ValueError(
                    f"loss_scale must be 'dynamic' or a positive number, got {loss_scale!r}"
                )
            self.static_scale = None
            self.scaler = torch.amp.GradScaler(
                self.device_type, init_scale=init_scale, growth_interval=growth_interval
            )
        else:
            if isinstance(loss_scale, bool) or not float(loss_scale) > 0:
                raise ValueError(
                    f"loss_scale must be 'dynamic' or a positive number, got {loss_scale!r}"
                )
            self.static_scale = float(loss_scale)
            self.scaler = None
        self._unscaled: set[int] = set()
        self._found_inf: dict[int, bool] = {}

    @property
    def scale(self) -> float:
        return self.static_scale if self.scaler is None else float(self.scaler.get_scale())

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            (loss * self.static_scale).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
            return
        if id(optimizer) in self._unscaled:
            return
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, 1.0 / self.static_scale)
            finite = torch.stack([torch.isfinite(g).all() for g in grads]).all()
            self._found_inf[id(optimizer)] = not bool(finite)
        self._unscaled.add(id(optimizer))

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        if self.scaler is not None:
            scale_before = self.scaler.get_scale()
            self.scaler.step(optimizer)
            self.scaler.update()
            # GradScaler skips the step and lowers the scale when it found inf/NaN.
            stepped = self.scaler.get_scale() >= scale_before
        else:
            self.unscale(optimizer)
            stepped = not self._found_inf.pop(id(optimizer), False)
            if stepped:
                optimizer.step()
            self._unscaled.discard(id(optimizer))
        if not stepped:
            self.skipped_steps += 1
        return stepped

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def __repr__(self) -> str:
        scale = "dynamic" if self.scaler is not None else self.static_scale
        return f"FP16MixedPrecision(loss_scale={scale})"
