"""deepseek-moe's plugin: its models, the ``moe_load_balancing`` callback and the
``expert`` strategy. Factories are deferred so that discovering the plugin imports neither
torch nor the model code."""

from __future__ import annotations

from deepseek.plugins import CallbackSpec, ModelSpec, StrategySpec, deferred, hookimpl


@hookimpl
def deepseek_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            "moe-mlp",
            deferred("deepseek.moe.classifier:MoEClassifier"),
            "tiny classifier around one top-k MoE layer (in_features, num_classes, ...)",
            tags=("moe", "classification"),
        ),
        ModelSpec(
            "moe-lm",
            deferred("deepseek.moe.models.transformer:MoETransformerLM"),
            "decoder-only DeepSeekMoE language model (RMSNorm, RoPE, shared + routed experts)",
            tags=("moe", "nlp", "causal-lm"),
        ),
    ]


@hookimpl
def deepseek_callbacks() -> list[CallbackSpec]:
    return [
        CallbackSpec(
            "moe_load_balancing",
            deferred("deepseek.moe.balancing:MoELoadBalancing"),
            "MoE aux/z losses with coefficients, aux-loss-free bias updates, load metrics/plots",
        ),
        CallbackSpec(
            "lm_sample",
            deferred("deepseek.moe.models.sample:GenerateSample"),
            "prints a text sample from a language model at the end of training",
        ),
    ]


@hookimpl
def deepseek_strategies() -> list[StrategySpec]:
    return [
        StrategySpec(
            "expert",
            deferred("deepseek.moe.parallel.strategy:ExpertParallelStrategy"),
            "expert parallelism (all_to_all token exchange) x data parallelism (needs "
            "deepseek-dist; launch with torchrun)",
        )
    ]
