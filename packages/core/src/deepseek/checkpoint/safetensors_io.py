"""State dicts to and from safetensors files, keeping tied (shared) tensors tied.

safetensors refuses tensors that share memory, so each distinct tensor is written once
and the other names for it are recorded as aliases in the file's metadata.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from deepseek.checkpoint.atomic import fsync_file
from deepseek.checkpoint.format import CheckpointError

ALIASES_KEY = "deepseek.aliases"
ORDER_KEY = "deepseek.keys"  # safetensors sorts names; state dicts have a meaningful order


def check_tensor_dict(state: Mapping[str, torch.Tensor], what: str = "model_state") -> None:
    """Raise one clear error if ``state`` cannot be written to safetensors."""
    if not isinstance(state, Mapping):
        hint = " (pass model.state_dict())" if isinstance(state, torch.nn.Module) else ""
        raise TypeError(
            f"{what} must be a mapping of names to tensors, got {type(state).__name__}{hint}"
        )
    for name, value in state.items():
        if not isinstance(name, str):
            raise TypeError(f"{what} keys must be strings, got {name!r}")
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{what}[{name!r}] is a {type(value).__name__}, not a tensor; "
                "put non-tensor state in trainer_state"
            )
        if value.layout != torch.strided or value.is_quantized:
            raise TypeError(
                f"{what}[{name!r}] is a sparse or quantized tensor; "
                "convert it to a dense tensor (e.g. .to_dense()) first"
            )
        if value.device.type == "meta":
            raise ValueError(f"{what}[{name!r}] is on the meta device and holds no data")


def save_tensors(state: Mapping[str, torch.Tensor], file: Path) -> None:
    """Write ``state`` to ``file`` (CPU, contiguous, ties as aliases) and fsync it."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first_name_of_view: dict[tuple, str] = {}
    storages_seen: set[tuple] = set()
    for name, tensor in state.items():
        tensor = tensor.detach()
        overlaps = False
        if tensor.numel() > 0:  # empty tensors may all report the same null pointer
            storage = (tensor.device, tensor.untyped_storage().data_ptr())
            view = (
                *storage,
                tensor.storage_offset(),
                tuple(tensor.shape),
                tensor.stride(),
                tensor.dtype,
            )
            if view in first_name_of_view:
                aliases[name] = first_name_of_view[view]
                continue
            first_name_of_view[view] = name
            # A different view of memory already saved: store its own copy.
            overlaps = storage in storages_seen
            storages_seen.add(storage)
        tensors[name] = tensor.to("cpu", copy=overlaps).contiguous()
    metadata = {
        "format": "pt",
        ALIASES_KEY: json.dumps(aliases),
        ORDER_KEY: json.dumps(list(state)),
    }
    save_file(tensors, file, metadata=metadata)
    fsync_file(file)


def load_tensors(file: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file written by ``save_tensors`` (or any safetensors file)."""
    try:
        with safe_open(file, framework="pt", device=device) as f:
            metadata = f.metadata() or {}
            state = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        aliases = json.loads(metadata.get(ALIASES_KEY, "{}"))
        for alias, target in aliases.items():
            state[alias] = state[target]
        order = json.loads(metadata.get(ORDER_KEY, "[]"))
        if sorted(order) == sorted(state):
            state = {name: state[name] for name in order}
    except (SafetensorError, json.JSONDecodeError, KeyError, AttributeError) as exc:
        raise CheckpointError(
            f"{file} is incomplete or corrupted (safetensors could not read it: {exc})"
        ) from None
    return state
