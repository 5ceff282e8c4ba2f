"""The module the ``lora`` entry point names: DeepSeek imports it once, at
discovery. It holds only ``@hookimpl`` functions; the factory is ``deferred`` so torch
code is imported only when ``lora`` is used."""

from __future__ import annotations

from deepseek.plugins import AlgorithmSpec, CallbackSpec, deferred, hookimpl


@hookimpl
def deepseek_algorithms() -> list[AlgorithmSpec]:
    return [
        AlgorithmSpec(
            "lora",
            deferred("deepseek_lora.algorithm:Lora"),
            "low-rank adapters (LoRA) on the nn.Linear layers matched by name patterns",
        )
    ]


@hookimpl
def deepseek_callbacks() -> list[CallbackSpec]:
    return [
        CallbackSpec(
            "ema_weights",
            deferred("deepseek_lora.ema:EMAWeights"),
            "an exponential moving average of the trainable weights (validated on, applied at end)",
        )
    ]
