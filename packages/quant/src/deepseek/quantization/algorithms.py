"""The ``qat`` algorithm and the ``freeze_quantization`` callback, for configs and the
Trainer (``algorithms: [{name: qat, weight_bits: 8}]``)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from deepseek.callbacks.base import Callback
from deepseek.quantization.config import QuantConfig
from deepseek.quantization.pt2e import QuantizedModel, quantize_model


class QuantizationAwareTraining:
    """``apply(model)`` returns a trainable fake-quant model (see :func:`quantize_model`).

    ``init_from`` (a checkpoint directory, ``<run>/checkpoints/best``/``last``, or a
    ``.safetensors`` file) first loads trained weights into a copy of the model: also
    those of a pruned model (the copy is shrunk to their shapes, which needs
    ``example_shape``) or of a distillation run's student.

    >>> import torch
    >>> from deepseek.plugins import registry
    >>> qat = registry("algorithm").create("qat", weight_bits=8, quant_scheme="symmetric")
    >>> type(qat.apply(torch.nn.Linear(4, 2))).__name__
    'QuantizedModel'
    """

    def __init__(
        self,
        weight_bits: int = 8,
        activation_bits: int = 8,
        quant_scheme: str = "symmetric",
        activation_scheme: str = "asymmetric",
        per_channel: bool = True,
        skip: Sequence[str] = (),
        freeze_observers_step: int | None = None,
        init_from: str | None = None,
        example_shape: Sequence[int] | None = None,
    ) -> None:
        self.init_from = init_from
        self.example_shape = tuple(example_shape) if example_shape is not None else None
        self.config = QuantConfig(
            weight_bits=weight_bits,
            activation_bits=activation_bits,
            quant_scheme=quant_scheme,
            activation_scheme=activation_scheme,
            per_channel=per_channel,
            skip=tuple(skip),
            freeze_observers_step=freeze_observers_step,
        )

    def apply(self, model: nn.Module) -> nn.Module:
        if self.init_from is not None:
            model = initialized_from(model, self.init_from, self.example_shape)
        return quantize_model(model, self.config, inplace=self.init_from is not None)

    def __repr__(self) -> str:
        return f"QuantizationAwareTraining({self.config})"


def initialized_from(
    model: nn.Module, path: str, example_shape: Sequence[int] | None = None
) -> nn.Module:
    """A copy of ``model`` holding the weights at ``path`` (shrunk first if they are a
    pruned version of it)."""
    from deepseek.pruning.resize import load_into

    example = torch.randn(*example_shape) if example_shape is not None else None
    return load_into(copy.deepcopy(model), path, example_inputs=example)


class FreezeQuantization(Callback):
    """Freeze the observers of every fake-quant model in the Trainer at a global step
    (default: the model's ``QuantConfig.freeze_observers_step``), so the scales stop
    moving for the last part of training, as QAT recipes do.

    >>> FreezeQuantization(observers_step=100).observers_step
    100
    """

    def __init__(self, observers_step: int | None = None) -> None:
        if observers_step is not None and (isinstance(observers_step, bool) or observers_step < 0):
            raise ValueError(f"observers_step must be a step count >= 0, got {observers_step!r}")
        self.observers_step = observers_step

    def on_train_batch_start(self, trainer: Any, batch: Any, batch_idx: int) -> None:
        for module in trainer.unwrapped_model.modules():
            if not isinstance(module, QuantizedModel) or bool(module.observers_frozen):
                continue
            step = self.observers_step
            if step is None:
                step = module.config.freeze_observers_step
            if step is not None and trainer.global_step >= step:
                module.freeze_observers()
