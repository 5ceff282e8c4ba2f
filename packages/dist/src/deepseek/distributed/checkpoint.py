"""Sharded checkpoints with ``torch.distributed.checkpoint`` (DCP), in core's atomic
checkpoint directories, and consolidation to one safetensors file.

Layout (a checkpoint of kind ``"sharded"``)::

    ckpt/
      sharded/.metadata, sharded/__<rank>_0.distcp   every rank's shards (DCP)
      trainer_state.pt                               progress, RNG, scheduler, ... (rank 0)
      meta.json                                      written last: sizes + SHA-256 of all

Every rank writes its own shards into a staging directory next to the target; rank 0
then writes the trainer state and ``meta.json`` and renames the directory into place
(``deepseek.checkpoint.atomic``), so a crash mid-save never damages the last good one.
DCP reshards on load: a checkpoint saved by 2 ranks loads on 1, and the reverse.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

SHARDS = "sharded"


def save_sharded(
    path: str | os.PathLike,
    state: dict[str, Any],
    trainer_state: Mapping[str, Any] | None,
    metadata: Mapping[str, Any],
    rank: int,
) -> Path:
    """Collective: every rank calls it with its (sharded) ``state``."""
    from deepseek.checkpoint.atomic import commit_dir, make_staging_dir
    from deepseek.checkpoint.io import write_meta

    path = Path(path).expanduser()
    box = [None]
    if rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        box = [str(make_staging_dir(path))]
    if dist.is_initialized():
        dist.broadcast_object_list(box, src=0)
    staging = Path(box[0])
    dcp.save(state, checkpoint_id=str(staging / SHARDS))
    if rank == 0:
        torch.save(dict(trainer_state or {}), staging / "trainer_state.pt")
        write_meta(staging, SHARDS, dict(metadata))
        commit_dir(staging, path)
    if dist.is_initialized():
        dist.barrier()
    return path


def saved_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Global shapes of the tensors in a sharded checkpoint (read from DCP's metadata)."""
    reader = dcp.FileSystemReader(str(Path(path) / SHARDS))
    shapes = {}
    for key, item in reader.read_metadata().state_dict_metadata.items():
        size = getattr(item, "size", None)
        if size is not None:
            shapes[key] = tuple(size)
    return shapes


def check_compatible(path: str | os.PathLike, expected: Mapping[str, tuple[int, ...]]) -> None:
    """One clear error (the same on every rank, no collective) when the checkpoint's
    tensors do not have the model's shapes."""
    saved = saved_shapes(path)
    bad = [
        f"{key}: checkpoint {saved[key]} vs model {shape}"
        for key, shape in expected.items()
        if key in saved and saved[key] != shape
    ]
    missing = sorted(k for k in expected if k not in saved)
    if bad or missing:
        details = "; ".join(bad[:5]) + (
            f"; not in the checkpoint: {missing[:5]}" if missing else ""
        )
        raise ValueError(
            f"the sharded checkpoint {path} does not fit this model: {details}. Resume with "
            "the model configuration that wrote it"
        )


def consolidate(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Merge a sharded checkpoint's model weights into one ``model.safetensors`` (no
    process group needed). Returns the file written (atomically: temp name + rename)."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from deepseek.checkpoint.format import read_meta

    path = Path(path)
    meta = read_meta(path)
    if meta.get("kind") != SHARDS:
        raise ValueError(
            f"{path} is a {meta.get('kind')!r} checkpoint, not a sharded one: its weights are "
            "already in one model.safetensors"
        )
    out = Path(out) if out is not None else path.parent / f"{path.name}.safetensors"
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    full = tmp.with_suffix(".pt")
    try:
        dcp_to_torch_save(str(path / SHARDS), str(full))
        state = torch.load(full, weights_only=True)
        model = state.get("model", state)
        tensors = {k: v.contiguous() for k, v in model.items() if isinstance(v, torch.Tensor)}
        save_file(tensors, str(tmp))
        os.replace(tmp, out)
    finally:
        for leftover in (tmp, full):
            if leftover.exists():
                leftover.unlink()
    return out


def run_consolidate(args: Any) -> int:
    import sys

    try:
        out = consolidate(args.dir, args.out)
    except (ValueError, OSError) as exc:
        print(f"deepseek checkpoint consolidate: error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


def add_checkpoint_command(parser: Any) -> None:
    command = parser.add_command(
        "checkpoint", help="tools for sharded checkpoints (consolidate)"
    )  # fmt: skip
    sub = command.add_subparsers(dest="action", required=True)
    merge = sub.add_parser(
        "consolidate", help="merge a sharded checkpoint into one safetensors file"
    )
    merge.add_argument("dir", help="the sharded checkpoint directory")
    merge.add_argument("--out", default=None, help="output file (default: DIR.safetensors)")
    merge.set_defaults(func=run_consolidate)
