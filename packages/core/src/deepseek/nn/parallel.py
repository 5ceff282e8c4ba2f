"""``ds.nn.parallel``: torch.nn.parallel plus the strategy classes plugins register.

    >>> import deepseek as ds
    >>> ds.nn.parallel.DistributedDataParallel is torch.nn.parallel.DistributedDataParallel
    True
    >>> ds.nn.parallel.strategy_class("single").__name__
    'SingleDeviceStrategy'
    >>> ds.nn.parallel.SingleDeviceStrategy is ds.nn.parallel.strategy_class("single")
    True

With deepseek-dist installed, ``ds.nn.parallel.DDPStrategy`` is its ``ddp`` strategy.
"""

from __future__ import annotations

from typing import Any

import torch  # noqa: F401 - for the doctest above
from torch.nn.parallel import *  # noqa: F403
from torch.nn.parallel import DataParallel, DistributedDataParallel  # noqa: F401

from deepseek.plugins.registry import registry
from deepseek.plugins.specs import implementation


def strategy_class(name: str) -> Any:
    """The class registered as strategy ``name`` (``"single"``, ``"ddp"``, ...)."""
    return implementation(registry("strategy").get(name))


def strategy_classes() -> dict[str, Any]:
    """Every registered strategy: name -> class."""
    return {spec.name: implementation(spec) for spec in registry("strategy")}


def __getattr__(name: str) -> Any:
    if name == "PipelineParallel":
        try:
            from deepseek.distributed import PipelineParallel
        except ImportError:
            raise ImportError(
                "ds.nn.parallel.PipelineParallel needs the deepseek-dist package: "
                "pip install deepseek-dist"
            ) from None
        return PipelineParallel
    for cls in strategy_classes().values():
        if getattr(cls, "__name__", None) == name:
            return cls
    known = sorted(getattr(c, "__name__", "?") for c in strategy_classes().values())
    raise AttributeError(
        f"module 'deepseek.nn.parallel' has no attribute {name!r}; registered strategy "
        f"classes: {', '.join(known)}"
    )
