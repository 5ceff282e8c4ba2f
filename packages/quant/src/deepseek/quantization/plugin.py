"""deepseek-quant's plugin: registers the quantization, pruning and distillation
algorithms of the whole distribution."""

from __future__ import annotations

from deepseek.plugins import AlgorithmSpec, CallbackSpec, deferred, hookimpl


@hookimpl
def deepseek_algorithms() -> list[AlgorithmSpec]:
    return [
        AlgorithmSpec(
            "qat",
            deferred("deepseek.quantization.algorithms:QuantizationAwareTraining"),
            "quantization-aware training: fake-quant model, convertible to real int8",
        ),
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
            "prune",
            deferred("deepseek.pruning.physical:ChannelPruning"),
            "remove the lowest-L1 channels physically, with everything coupled to them",
        ),
        AlgorithmSpec(
            "distillation",
            deferred("deepseek.distillation.distiller:Distillation"),
            "train a student on a frozen teacher's softened logits plus the labels",
        ),
    ]


@hookimpl
def deepseek_callbacks() -> list[CallbackSpec]:
    return [
        CallbackSpec(
            "freeze_quantization",
            deferred("deepseek.quantization.algorithms:FreezeQuantization"),
            "freeze fake-quant observers at a global step",
        ),
        CallbackSpec(
            "int8_export",
            deferred("deepseek.quantization.callbacks:Int8Export"),
            "convert the trained (QAT) or calibrated model to real int8 and save it",
        ),
        CallbackSpec(
            "compression_report",
            deferred("deepseek.quantization.callbacks:CompressionReport"),
            "accuracy, size and CPU latency of each compression stage, in one table",
        ),
        CallbackSpec(
            "iterative_pruning",
            deferred("deepseek.pruning.iterative:IterativePruning"),
            "prune channels physically in steps at chosen epochs, finetuning in between",
        ),
    ]
