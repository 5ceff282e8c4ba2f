"""Rebuild a model from a checkpoint: its class and constructor arguments travel in
``meta.json`` (JSON only, never pickled), its weights in ``model.safetensors``.

A model opts in by exposing its constructor arguments:

- ``self.hparams``: a dict of keyword arguments -> rebuilt as ``cls(**hparams)``;
- ``self.config``: a dict or a dataclass -> rebuilt as ``cls(config)`` (a dataclass is
  rebuilt from its fields first), the Hugging Face convention;
- or a classmethod ``from_hparams(hparams)`` that does it its own way.

The Trainer records them with every checkpoint (``capture_hparams``). ``load_model``
needs the class: pass it, or let it be found from the recorded ``module:qualname`` when
that module is already imported or is part of ``deepseek`` (importing a module a file
names would run code the file chose).

    >>> import tempfile, torch
    >>> from torch import nn
    >>> from deepseek.checkpoint import CheckpointMixin, save_checkpoint, capture_hparams
    >>> class MLP(CheckpointMixin, nn.Module):
    ...     def __init__(self, width: int = 4):
    ...         super().__init__()
    ...         self.hparams = {"width": width}
    ...         self.fc = nn.Linear(width, 1)
    >>> model = MLP(width=3)
    >>> path = save_checkpoint(tempfile.mkdtemp() + "/c", model.state_dict(),
    ...                        metadata={"model": capture_hparams(model)})
    >>> MLP.from_checkpoint(path).fc.in_features
    3
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from deepseek.checkpoint.format import CheckpointError, read_meta

MODEL_KEY = "model"
_M = TypeVar("_M", bound=nn.Module)


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def capture_hparams(model: nn.Module) -> dict[str, Any] | None:
    """``{"class", "source", "hparams"}`` describing how to rebuild ``model``, or None when
    it exposes no JSON-serialisable ``hparams`` / ``config``."""
    model = _unwrap(model)
    record: dict[str, Any] = {"class": _class_path(type(model))}
    hparams = getattr(model, "hparams", None)
    config = getattr(model, "config", None)
    if isinstance(hparams, Mapping):
        record.update(source="hparams", hparams=dict(hparams))
    elif isinstance(config, Mapping):
        record.update(source="config", hparams=dict(config))
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        record.update(
            source="config",
            hparams=dataclasses.asdict(config),
            config_class=_class_path(type(config)),
        )
    else:
        return None
    try:
        json.dumps(record["hparams"], allow_nan=False)
    except (TypeError, ValueError):
        return None  # not plain data: never pickle it into the checkpoint
    return record


def _unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "_orig_mod", None)  # torch.compile
    if isinstance(inner, nn.Module):
        model = inner
    while isinstance(getattr(model, "module", None), nn.Module) and type(model).__name__ in (
        "DistributedDataParallel",
        "DataParallel",
        "FullyShardedDataParallel",
    ):
        model = model.module
    return model


def _import_class(path: str, what: str) -> type:
    module_name, _, qualname = path.partition(":")
    if module_name not in sys.modules and not module_name.startswith("deepseek."):
        raise CheckpointError(
            f"the checkpoint names {what} {path}, whose module is not imported; DeepSeek "
            f"does not import modules a file names. Import {module_name} first, or pass "
            "model_class=YourModel"
        )
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not isinstance(obj, type):
        raise CheckpointError(f"the checkpoint names {what} {path}, which does not exist")
    return obj


def build_model(record: Mapping[str, Any], model_class: type[_M] | None = None) -> _M:
    """Construct a model (untrained) from a ``capture_hparams`` record."""
    cls = model_class or _import_class(str(record.get("class")), "the model class")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"model_class must be an nn.Module subclass, got {cls!r}")
    hparams = dict(record.get("hparams") or {})
    from_hparams = getattr(cls, "from_hparams", None)
    if callable(from_hparams):
        return from_hparams(hparams)
    try:
        if record.get("source") == "hparams":
            return cls(**hparams)
        if record.get("config_class"):
            config_cls = _import_class(str(record["config_class"]), "the config class")
            return cls(config_cls(**hparams))
        return cls(hparams)
    except TypeError as exc:
        raise TypeError(
            f"cannot rebuild {cls.__name__} from the checkpoint's hyper-parameters "
            f"{sorted(hparams)}: {exc}. Give {cls.__name__} a classmethod "
            "from_hparams(hparams) that builds it"
        ) from None


def load_model(
    path: str | os.PathLike,
    model_class: type[_M] | None = None,
    *,
    map_location: str | torch.device = "cpu",
    strict: bool = True,
    verify: bool = True,
) -> _M:
    """Rebuild the model saved at ``path``: construct it from the hyper-parameters the
    checkpoint recorded, then load its weights (checksums verified). Returns it in eval
    mode.

    Raises CheckpointError when the checkpoint recorded no hyper-parameters (the model
    exposed no ``hparams`` / ``config``): then build the model yourself and use
    ``load_weights(model, path)``.
    """
    from deepseek.checkpoint.io import resolve_checkpoint_dir
    from deepseek.checkpoint.weights import load_weights

    directory = resolve_checkpoint_dir(Path(path).expanduser())
    meta = read_meta(directory)
    record = (meta.get("metadata") or {}).get(MODEL_KEY)
    if not isinstance(record, Mapping):
        raise CheckpointError(
            f"{directory} records no hyper-parameters to rebuild the model from (the model "
            "had no `hparams` dict or `config`); construct it yourself and call "
            "deepseek.checkpoint.load_weights(model, path)"
        )
    model = build_model(record, model_class)
    load_weights(model, directory, strict=strict, map_location=map_location, verify=verify)
    return model.eval()


class CheckpointMixin:
    """Adds ``Model.from_checkpoint(path)`` to an ``nn.Module`` subclass."""

    @classmethod
    def from_checkpoint(
        cls: type[_M],
        path: str | os.PathLike,
        *,
        map_location: str | torch.device = "cpu",
        strict: bool = True,
    ) -> _M:
        """Rebuild this model class from a checkpoint (see ``load_model``)."""
        return load_model(path, cls, map_location=map_location, strict=strict)
