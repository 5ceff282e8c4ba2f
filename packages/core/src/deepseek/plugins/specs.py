"""Registration records: what a plugin's hooks return.

Each record is a small frozen dataclass holding a ``name`` (what configs and string
arguments use), a ``factory`` (called to build the object) and a one-line
``description`` (shown by ``deepseek plugins``). ``override=True`` lets a record replace
one of the same name from another distribution instead of being reported as a conflict.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Spec:
    name: str
    factory: Callable[..., Any]
    description: str = ""
    override: bool = False

    kind = "spec"  # class attribute: the registry this record belongs to

    def create(self, *args: Any, **kwargs: Any) -> Any:
        return self.factory(*args, **kwargs)


@dataclass(frozen=True)
class BackendSpec(Spec):
    """A device family. ``factory()`` returns a ``deepseek.backends.Backend``."""

    kind = "backend"


@dataclass(frozen=True)
class StrategySpec(Spec):
    """How a model and its data are spread over processes. ``factory(**options)``
    returns a ``deepseek.training.Strategy``."""

    kind = "strategy"


@dataclass(frozen=True)
class PrecisionSpec(Spec):
    """Autocast + loss scaling. ``factory(backend, **options)`` returns a
    ``deepseek.training.Precision``."""

    kind = "precision"


@dataclass(frozen=True)
class CallbackSpec(Spec):
    """A Trainer callback. ``factory(**options)`` returns a ``deepseek.callbacks.Callback``."""

    kind = "callback"


@dataclass(frozen=True)
class AlgorithmSpec(Spec):
    """A model transformation (quantization, pruning, distillation, ...).
    ``factory(**options)`` returns an object with ``apply(model)``."""

    kind = "algorithm"


@dataclass(frozen=True)
class ModelSpec(Spec):
    """A named model. ``factory(**options)`` returns an ``nn.Module``; ``tags`` helps
    listing (e.g. ``("nlp", "encoder")``)."""

    tags: tuple[str, ...] = field(default=())
    kind = "model"


@dataclass(frozen=True)
class MetricSpec(Spec):
    """A named metric a config or the Trainer can ask for (``metrics: [accuracy]``).
    ``factory(**options)`` returns a metric object as ``deepseek.metrics`` defines it
    (``update(preds, target)`` / ``compute()`` / ``reset()``); ``tags`` helps listing
    (e.g. ``("classification",)``)."""

    tags: tuple[str, ...] = field(default=())
    kind = "metric"


_TARGET = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def deferred(target: str) -> Callable[..., Any]:
    """A factory that imports ``"package.module:attribute"`` only when first called.

    Plugin modules use it so that discovering a plugin never imports its heavy code::

        BackendSpec("cuda", deferred("deepseek.backends.cuda:CUDABackend"), "NVIDIA GPUs")
    """
    if not _TARGET.fullmatch(target):
        raise ValueError(
            f"deferred target must look like 'package.module:attribute', got {target!r}"
        )

    def factory(*args: Any, **kwargs: Any) -> Any:
        return load_target(target)(*args, **kwargs)

    factory.__qualname__ = factory.__name__ = f"deferred({target})"
    factory.target = target  # type: ignore[attr-defined]
    return factory


def load_target(target: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def implementation(spec: Spec) -> Any:
    """What a record builds with: the class (or function) behind its factory, imported
    now if the factory is ``deferred``, never called."""
    target = getattr(spec.factory, "target", None)
    return load_target(target) if target else spec.factory


SPEC_TYPES: dict[str, type[Spec]] = {
    cls.kind: cls
    for cls in (
        BackendSpec,
        StrategySpec,
        PrecisionSpec,
        CallbackSpec,
        AlgorithmSpec,
        ModelSpec,
        MetricSpec,
    )
}
