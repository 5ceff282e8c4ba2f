"""The one table of first-party distributions (public as ``deepseek.plugins.first_party``).

Everything that needs to know the first-party packages reads this table: the namespace's
"pip install ..." hints (``deepseek/__init__.py``), the plugin manager (first-party
plugins load even when autoload is off), the registries' install hints, ``deepseek env``
and the wheel check. It is a leaf module with no imports, so ``import deepseek`` stays
light.

``hints`` are names a sibling registers through its OWN plugin, repeated here only so that
a user without that sibling installed gets the ``pip install`` line; core never registers
them. A test checks that every installed sibling really provides what its hints promise.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FirstPartyDistribution:
    """One first-party distribution: its name, its ``deepseek`` entry-point (plugin)
    name, the ``deepseek.<sub>`` packages it ships and the names it registers (hints)."""

    distribution: str
    plugin: str
    subpackages: tuple[str, ...] = ()
    hints: dict[str, tuple[str, ...]] = field(default_factory=dict)  # kind -> names


FIRST_PARTY: tuple[FirstPartyDistribution, ...] = (
    FirstPartyDistribution("deepseek-core", "core"),
    FirstPartyDistribution("deepseek-dist", "dist", ("distributed",), {"strategy": ("ddp",)}),
    FirstPartyDistribution(
        "deepseek-quant",
        "quant",
        ("quantization", "pruning", "distillation"),
        {
            "algorithm": ("qat", "ptq", "prune", "l1_channel_pruning", "distillation"),
            "callback": ("freeze_quantization",),
        },
    ),
    FirstPartyDistribution(
        "deepseek-nlp",
        "nlp",
        ("nlp",),
        {
            "model": (
                "bert",
                "bert-base-chinese",
                "bert-base-uncased",
                "bert-large-uncased",
                "bert-tiny",
                "bert_classifier",
            )
        },
    ),
    FirstPartyDistribution(
        "deepseek-vision",
        "vision",
        ("vision",),
        {
            "model": (
                "resnet18",
                "resnet34",
                "resnet50",
                "unet",
                "unetplusplus",
                "unetplusplus3d",
                "unetr",
                "vit3d",
            ),
            "metric": ("dice", "iou", "hd95"),
        },
    ),
    FirstPartyDistribution(
        "deepseek-moe",
        "moe",
        ("moe",),
        {
            "model": ("moe-mlp", "moe-lm"),
            "strategy": ("expert",),
            "callback": ("moe_load_balancing", "lm_sample"),
        },
    ),
)
"""Every first-party distribution but the meta-distribution ``deepseek-framework``."""

META_DISTRIBUTION = "deepseek-framework"

DISTRIBUTIONS: frozenset[str] = frozenset(d.distribution for d in FIRST_PARTY)
PLUGIN_NAMES: frozenset[str] = frozenset(d.plugin for d in FIRST_PARTY)
CORE = FIRST_PARTY[0]


def subpackages() -> dict[str, str]:
    """``deepseek.<sub>`` shipped by a distribution other than core -> that distribution."""
    return {sub: d.distribution for d in FIRST_PARTY for sub in d.subpackages}


def install_hints() -> dict[str, dict[str, str]]:
    """kind -> {name: distribution} for names a first-party sibling registers."""
    table: dict[str, dict[str, str]] = {}
    for d in FIRST_PARTY:
        for kind, names in d.hints.items():
            for name in names:
                table.setdefault(kind, {})[name] = d.distribution
    return table


def normalize_distribution(name: str) -> str:
    """PEP 503-style normalisation: ``Deepseek_Core`` -> ``deepseek-core``."""
    return name.strip().lower().replace("_", "-").replace(".", "-")


def is_first_party(distribution: str) -> bool:
    return normalize_distribution(distribution) in DISTRIBUTIONS
