"""deepseek-moe's plugin: registers its models. Factories are deferred so that discovering
the plugin imports neither torch nor the model code."""

from __future__ import annotations

from deepseek.plugins import ModelSpec, deferred, hookimpl


@hookimpl
def deepseek_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            "moe-mlp",
            deferred("deepseek.moe.classifier:MoEClassifier"),
            "tiny classifier around one top-k MoE layer (in_features, num_classes, ...)",
            tags=("moe", "classification"),
        )
    ]
