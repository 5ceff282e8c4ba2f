"""The first-party distributions: one table shared by the namespace hints, the plugin
manager, the registries' install hints and ``deepseek env``.

    >>> from deepseek.plugins.first_party import FIRST_PARTY, subpackages
    >>> [d.distribution for d in FIRST_PARTY][:2]
    ['deepseek-core', 'deepseek-dist']
    >>> subpackages()["nlp"]
    'deepseek-nlp'

The table itself lives in the leaf module ``deepseek._first_party`` so that
``import deepseek`` can read it without importing the plugin system.
"""

from deepseek._first_party import (
    CORE,
    DISTRIBUTIONS,
    FIRST_PARTY,
    META_DISTRIBUTION,
    PLUGIN_NAMES,
    FirstPartyDistribution,
    install_hints,
    is_first_party,
    normalize_distribution,
    subpackages,
)

__all__ = [
    "CORE",
    "DISTRIBUTIONS",
    "FIRST_PARTY",
    "META_DISTRIBUTION",
    "PLUGIN_NAMES",
    "FirstPartyDistribution",
    "install_hints",
    "is_first_party",
    "normalize_distribution",
    "subpackages",
]
