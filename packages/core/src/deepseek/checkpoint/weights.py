"""Load weights from a checkpoint directory or a bare ``.safetensors`` file into a model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from deepseek.checkpoint.format import WEIGHTS_FILE, CheckpointError, read_meta, verify_checksums
from deepseek.checkpoint.io import resolve_checkpoint_dir, resolve_map_location
from deepseek.checkpoint.safetensors_io import load_tensors

if TYPE_CHECKING:
    from torch.nn.modules.module import _IncompatibleKeys

_SHOWN = 5  # keys listed per kind of mismatch


def load_weights(
    model: nn.Module,
    path: str | os.PathLike,
    strict: bool = True,
    map_location: str | torch.device = "cpu",
    *,
    verify: bool = True,
) -> _IncompatibleKeys:
    """Load the weights at ``path`` into ``model`` and return torch's
    ``_IncompatibleKeys(missing_keys, unexpected_keys)``.

    ``path`` is a checkpoint directory (full or weights-only: only ``model.safetensors``
    is read) or a bare ``.safetensors`` file. Before touching the model, every key and
    shape is checked: a shape mismatch, or with ``strict=True`` a missing or unexpected
    key, raises one ValueError listing them. In a checkpoint directory the weights file's
    SHA-256 is checked against the one recorded at save time (``verify=False`` skips it).

    Example:
        >>> import tempfile, torch
        >>> from deepseek.checkpoint import save_checkpoint
        >>> path = save_checkpoint(tempfile.mkdtemp() + "/w", torch.nn.Linear(3, 1).state_dict())
        >>> fresh = torch.nn.Linear(3, 1)
        >>> load_weights(fresh, path)
        <All keys matched successfully>
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"load_weights needs an nn.Module, got {type(model).__name__}")
    path = Path(path).expanduser()
    state = _read_weights(path, resolve_map_location(map_location), verify)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if mismatched or (strict and (missing or unexpected)):
        lines = [f"the weights in {path} do not match {type(model).__name__}:"]
        for label, items in (
            ("missing keys (in the model, not in the checkpoint)", missing),
            ("unexpected keys (in the checkpoint, not in the model)", unexpected),
            ("shape mismatches", mismatched),
        ):
            if items:
                more = f", ... ({len(items)} in all)" if len(items) > _SHOWN else ""
                lines.append(f"  {label}: {', '.join(items[:_SHOWN])}{more}")
        if not mismatched:
            lines.append("Pass strict=False to load only the keys both have.")
        raise ValueError("\n".join(lines))
    return model.load_state_dict(state, strict=strict)


def _read_weights(path: Path, device: str, verify: bool) -> dict[str, torch.Tensor]:
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(
                f"load_weights reads DeepSeek checkpoint directories and .safetensors files; "
                f"{path} is neither. For a torch.save file, use "
                "model.load_state_dict(torch.load(path, weights_only=True))"
            )
        return load_tensors(path, device)
    directory = resolve_checkpoint_dir(path)
    meta = read_meta(directory)
    if meta.get("kind") == "sharded":
        raise CheckpointError(
            f"{directory} is a sharded checkpoint (written by a deepseek-dist strategy): "
            f"consolidate it first with `deepseek checkpoint consolidate {directory}` "
            "(deepseek-dist), or resume it with the same strategy"
        )
    if verify:
        verify_checksums(directory, meta, names=[WEIGHTS_FILE])
    return load_tensors(directory / WEIGHTS_FILE, device)
