"""The module the ``tensorboard`` entry point names: DeepSeek imports it once, at
discovery. The factory is ``deferred`` so neither this package's callback nor
``torch.utils.tensorboard`` is imported until the name is used."""

from __future__ import annotations

from deepseek.plugins import CallbackSpec, deferred, hookimpl


@hookimpl
def deepseek_callbacks() -> list[CallbackSpec]:
    return [
        CallbackSpec(
            "tensorboard",
            deferred("deepseek_tensorboard.callback:TensorBoardLogger"),
            "TensorBoard event files: metrics, learning rates, weight histograms, profiler trace",
        )
    ]
