"""deepseek-quant's plugin: registers the quantization, pruning and distillation
algorithms of the whole distribution."""

from __future__ import annotations

from deepseek.plugins import AlgorithmSpec, deferred, hookimpl


@hookimpl
def deepseek_algorithms() -> list[AlgorithmSpec]:
    return [
        AlgorithmSpec(
            "ptq",
            deferred("deepseek.quantization.dynamic:PostTrainingQuantization"),
            "dynamic int8 post-training quantization for CPU inference",
        ),
        AlgorithmSpec(
            "l1_channel_pruning",
            deferred("deepseek.pruning.structured:L1ChannelPruning"),
            "zero the output channels of Conv/Linear layers with the lowest L1 norms",
        ),
        AlgorithmSpec(
            "distillation",
            deferred("deepseek.distillation.distiller:Distillation"),
            "train a student on a frozen teacher's softened logits plus the labels",
        ),
    ]
