"""DeepSeek: a modular, plugin-based deep-learning framework built on PyTorch.

``import deepseek as ds`` gives a curated torch-compatible surface (a ``ds.tensor`` *is*
a ``torch.Tensor``) plus the framework's own pieces, imported lazily on first use::

    >>> import deepseek as ds
    >>> x = ds.tensor([2.0], requires_grad=True)
    >>> y = x ** 3 + 5 * x
    >>> y.backward()
    >>> print(x.grad)
    tensor([17.])

The namespace is shared by several distributions (deepseek-core, deepseek-dist, ...);
``extend_path`` lets each one ship its own ``deepseek/<sub>`` directory.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import pkgutil
import sys
from typing import Any

__path__ = pkgutil.extend_path(__path__, __name__)
__version__ = "0.1.0"

# The torch surface users reach for most. Re-exported objects are torch's own.
from torch import (
    Generator,
    Size,
    Tensor,
    arange,
    bfloat16,
    bool,
    cat,
    device,
    dtype,
    empty,
    enable_grad,
    eye,
    float16,
    float32,
    float64,
    from_numpy,
    full,
    get_default_dtype,
    inference_mode,
    int8,
    int16,
    int32,
    int64,
    linspace,
    manual_seed,
    no_grad,
    ones,
    ones_like,
    rand,
    randint,
    randn,
    randn_like,
    randperm,
    set_default_dtype,
    set_grad_enabled,
    stack,
    tensor,
    uint8,
    zeros,
    zeros_like,
)

half = float16
float = float32
double = float64
long = int64
int = int32

# Subpackages owned by deepseek-core, imported on first attribute access.
_CORE_SUBPACKAGES = frozenset(
    {
        "amp",
        "autograd",
        "backends",
        "callbacks",
        "checkpoint",
        "cli",
        "compiler",
        "config",
        "cuda",
        "metrics",
        "nn",
        "optim",
        "plugins",
        "profiler",
        "training",
        "utils",
    }
)

# Subpackages shipped by other distributions: attribute -> distribution to install. Read
# from the one table of first-party distributions (a leaf module: no plugin system here).
from deepseek._first_party import subpackages as _first_party_subpackages  # noqa: E402

OPTIONAL_SUBPACKAGES: dict[str, str] = _first_party_subpackages()

# Objects re-exported at the top level from lazily imported core modules.
_LAZY_OBJECTS: dict[str, tuple[str, str]] = {
    "Trainer": ("deepseek.training", "Trainer"),
    "MixedPrecisionTrainer": ("deepseek.training", "MixedPrecisionTrainer"),
    # Static-graph mode lives in deepseek.compiler (torch's naming): a subpackage called
    # "compile" would shadow the ds.compile function once imported.
    "compile": ("deepseek.compiler", "compile"),
    "export": ("deepseek.compiler", "export"),
    "load_exported": ("deepseek.compiler", "load_exported"),
    "seed_everything": ("deepseek.utils.seed", "seed_everything"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_OBJECTS:
        module_name, attr = _LAZY_OBJECTS[name]
        try:
            value = getattr(importlib.import_module(module_name), attr)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            raise AttributeError(f"module 'deepseek' has no attribute {name!r}") from None
    elif name in _CORE_SUBPACKAGES:
        value = importlib.import_module(f"{__name__}.{name}")
    elif name in OPTIONAL_SUBPACKAGES:
        value = _import_optional(name)
    else:
        raise AttributeError(f"module 'deepseek' has no attribute {name!r}")
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def _import_optional(name: str) -> Any:
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except MissingDistributionError as exc:
        # Re-raise without the import machinery's frames: the message says what to do.
        raise MissingDistributionError(str(exc), name=exc.name) from None


class MissingDistributionError(ImportError):
    """``deepseek.<sub>`` whose distribution is not installed."""


class _MissingDistributionFinder(importlib.abc.MetaPathFinder):
    """Last finder on ``sys.meta_path``: turns ``import deepseek.nlp`` without
    deepseek-nlp installed into an ImportError that says what to install."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        prefix, _, sub = fullname.partition(".")
        if prefix == __name__ and sub in OPTIONAL_SUBPACKAGES and not _probing():
            dist = OPTIONAL_SUBPACKAGES[sub]
            raise MissingDistributionError(
                f"{fullname} needs the {dist} package: pip install {dist}", name=fullname
            )
        return None


def _probing() -> bool:
    """Whether ``importlib.util.find_spec`` asked (a tool checking for a module, which
    expects None when it is absent) rather than an import statement (which gets the hint)."""
    frame = sys._getframe(2)
    for _ in range(4):  # find_spec <- importlib's _find_spec <- the asker
        if frame is None:
            return False
        if frame.f_code is importlib.util.find_spec.__code__:
            return True
        frame = frame.f_back
    return False


if not any(type(f).__name__ == "_MissingDistributionFinder" for f in sys.meta_path):
    sys.meta_path.append(_MissingDistributionFinder())


def __dir__() -> list[str]:
    return sorted(
        set(globals()) | _CORE_SUBPACKAGES | set(OPTIONAL_SUBPACKAGES) | set(_LAZY_OBJECTS)
    )
