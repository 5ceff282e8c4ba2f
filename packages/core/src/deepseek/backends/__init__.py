"""``ds.backends``: device families registered by plugins (cpu, cuda, rocm, ...).

    >>> import deepseek as ds
    >>> backend = ds.backends.get("auto")      # the best available
    >>> backend.name in ds.backends.names()
    True
    >>> ds.backends.get("cpu").device()
    device(type='cpu')

Names other than ours fall through to ``torch.backends`` (``ds.backends.cudnn`` is
``torch.backends.cudnn``).
"""

from __future__ import annotations

from typing import Any

import torch.backends

from deepseek.backends.base import Backend
from deepseek.plugins.registry import registry

__all__ = ["Backend", "available", "get", "names"]

# Keyed by the record, so an override registered later builds its own instance.
_instances: dict[object, Backend] = {}


def names() -> list[str]:
    """Every registered backend name, available or not."""
    return registry("backend").names()


def _instance(name: str) -> Backend:
    spec = registry("backend").get(name)
    if spec not in _instances:
        backend = spec.create()
        if not isinstance(backend, Backend):
            dist = registry("backend").provider(spec.name).distribution
            raise TypeError(
                f"backend {spec.name!r} (from {dist}) built a {type(backend).__name__}, "
                "not a deepseek.backends.Backend"
            )
        _instances[spec] = backend
    return _instances[spec]


def available() -> list[Backend]:
    """Available backends, best first."""
    found = [_instance(name) for name in names()]
    return sorted((b for b in found if b.is_available()), key=lambda b: -b.priority)


def get(name: str | Backend = "auto") -> Backend:
    """The backend called ``name``; ``"auto"`` picks the best available one.

    Raises a ``RuntimeError`` saying why when the named backend is not available here.
    """
    if isinstance(name, Backend):
        return name
    if isinstance(name, str) and name.strip().lower() == "auto":
        found = available()
        if not found:
            raise RuntimeError(
                "no backend is available: registered backends are "
                f"{names() or '(none)'}. Is the deepseek-core plugin disabled "
                "(DEEPSEEK_DISABLED_PLUGINS / DEEPSEEK_PLUGINS)?"
            )
        return found[0]
    backend = _instance(name)
    if not backend.is_available():
        others = ", ".join(b.name for b in available())
        raise RuntimeError(
            f"backend {backend.name!r} is not available: {backend.unavailable_reason()}. "
            f"Available here: {others}. Use backend='auto' to pick the best one."
        )
    return backend


def __getattr__(name: str) -> Any:
    try:
        return getattr(torch.backends, name)
    except AttributeError:
        raise AttributeError(f"module 'deepseek.backends' has no attribute {name!r}") from None
