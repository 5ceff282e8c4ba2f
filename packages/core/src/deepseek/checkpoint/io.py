"""Save, load and find checkpoints: atomic directories, safetensors weights, and a
trainer state that only ever loads with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from deepseek.checkpoint.atomic import (
    commit_dir,
    find_backup,
    fsync_dir,
    make_staging_dir,
    recover,
    remove_dir,
)
from deepseek.checkpoint.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    META_FILE,
    REQUIRED_FILES,
    TRAINER_STATE_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    HashingWriter,
    backup_target,
    file_checksum,
    is_staging_name,
    list_files,
    read_meta,
)
from deepseek.checkpoint.safetensors_io import check_tensor_dict, load_tensors, save_tensors

PathLike = str | os.PathLike


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns.

    ``trainer_state`` is None for a weights-only checkpoint; ``metadata`` is the
    mapping given to ``save_checkpoint`` (``{}`` if none).
    """

    path: Path
    model_state: dict[str, torch.Tensor]
    trainer_state: dict[str, Any] | None
    metadata: dict[str, Any]

    layout: str = ""  # meta.json's kind; "" for checkpoints built by hand

    @property
    def kind(self) -> str:
        """``"full"`` (with trainer state), ``"weights"``, or ``"sharded"`` (model state in
        ``sharded/``, loaded by the strategy that wrote it; ``model_state`` is empty)."""
        if self.layout == "sharded":
            return "sharded"
        return "weights" if self.trainer_state is None else "full"


def save_checkpoint(
    path: PathLike,
    model_state: Mapping[str, torch.Tensor],
    trainer_state: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory at ``path`` atomically and return its path.

    ``model_state`` (tensors, tied ones kept tied) goes to ``model.safetensors``;
    ``trainer_state`` (optimizer/scaler ``state_dict()``s, progress counters, RNG states,
    callback state: tensors and plain Python data only) to ``trainer_state.pt``; leave it
    None for a weights-only checkpoint. ``metadata`` must be JSON-serialisable; a
    ``global_step`` entry orders checkpoints for ``latest_checkpoint``.

    The directory is written as ``.<name>.tmp-<random>`` beside ``path``, fsynced and
    renamed into place, so a crash never leaves a half-written checkpoint at ``path``.
    An existing checkpoint at ``path`` is replaced: it is renamed to
    ``.<name>.old-<random>`` just before the new one moves in and deleted right after;
    if a crash hits in between, ``load_checkpoint(path)`` reads that backup and the next
    save to ``path`` moves it back. One process should write a given path at a time.

    Example:
        >>> import tempfile, torch
        >>> model = torch.nn.Linear(2, 2)
        >>> opt = torch.optim.AdamW(model.parameters())
        >>> root = tempfile.mkdtemp()
        >>> path = save_checkpoint(f"{root}/step-10", model.state_dict(),
        ...                        {"optimizer": opt.state_dict()}, {"global_step": 10})
        >>> load_checkpoint(path).metadata
        {'global_step': 10}
    """
    path = Path(path).expanduser()
    if path.name in ("", ".", ".."):
        raise ValueError(f"save_checkpoint needs a path ending in a directory name, got {path}")
    check_tensor_dict(model_state)
    if trainer_state is not None and not isinstance(trainer_state, Mapping):
        raise TypeError(
            f"trainer_state must be a mapping (dict) or None, got {type(trainer_state).__name__}"
        )
    meta = _new_meta(trainer_state is None, metadata)  # fails before touching the disk
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_replaceable(path)
    recover(path, _is_complete)
    staging = None
    try:
        staging = make_staging_dir(path)
        checksums = {}
        save_tensors(model_state, staging / WEIGHTS_FILE)
        # safetensors writes the file itself: hash it right back from the page cache,
        # which also proves the bytes on disk are the ones written.
        checksums[WEIGHTS_FILE] = file_checksum(staging / WEIGHTS_FILE)
        if trainer_state is not None:
            checksums[TRAINER_STATE_FILE] = _save_trainer_state(
                trainer_state, staging / TRAINER_STATE_FILE
            )
        _finish_meta(staging, meta, checksums)
        commit_dir(staging, path)
    except OSError as exc:
        raise _disk_error(exc, path) from exc
    except SafetensorError as exc:  # safetensors reports I/O errors as its own type
        code = re.search(r"os error (\d+)", str(exc))
        if code is None or int(code.group(1)) not in _WRITE_ERRORS:
            raise
        number = int(code.group(1))
        raise _disk_error(OSError(number, os.strerror(number)), path) from exc
    finally:
        if staging is not None and staging.exists():
            remove_dir(staging)
    return path


_WRITE_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "file too large",
    getattr(errno, "EDQUOT", errno.ENOSPC): "disk quota exceeded",
    errno.EACCES: "the directory is not writable",
    errno.EPERM: "the directory is not writable",
    errno.EROFS: "the file system is read-only",
}


def _disk_error(exc: OSError, path: Path) -> OSError:
    """The same OSError, saying which checkpoint could not be written and what is intact."""
    what = _WRITE_ERRORS.get(exc.errno)  # type: ignore[arg-type]
    if what is None:
        return exc
    previous = "; the previous checkpoint there is intact" if os.path.lexists(path) else ""
    return type(exc)(
        exc.errno,
        f"cannot write checkpoint {path}: {what} ({exc.strerror or exc}){previous}. "
        f"Free space or choose another directory than {path.parent}",
    )


def write_meta(
    staging: PathLike,
    kind: str,
    metadata: Mapping[str, Any] | None = None,
    checksums: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write ``meta.json`` (last) into a staging directory whose other files are complete:
    every file's size and SHA-256 (``checksums`` gives those already computed while
    writing), then fsync. For writers with their own layout (deepseek-dist's sharded
    checkpoints); commit the directory afterwards with ``atomic.commit_dir``.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> staging = Path(tempfile.mkdtemp())
        >>> torch.save({"step": 1}, staging / "trainer_state.pt")
        >>> (staging / "sharded").mkdir(); _ = (staging / "sharded/.metadata").write_bytes(b"x")
        >>> sorted(write_meta(staging, "sharded", {"global_step": 1})["files"])
        ['sharded/.metadata', 'trainer_state.pt']
    """
    if kind not in REQUIRED_FILES:
        raise ValueError(f"kind must be one of {sorted(REQUIRED_FILES)}, got {kind!r}")
    meta = _new_meta(kind == "weights", metadata)
    meta["kind"] = kind
    _finish_meta(Path(staging), meta, dict(checksums or {}))
    return meta


def _finish_meta(staging: Path, meta: dict[str, Any], checksums: dict[str, str]) -> None:
    names = list_files(staging)
    meta["files"] = {name: (staging / name).stat().st_size for name in names}
    meta["checksums"] = {
        name: checksums.get(name) or file_checksum(staging / name) for name in names
    }
    with open(staging / META_FILE, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(staging)


def load_checkpoint(
    path: PathLike, map_location: str | torch.device = "cpu", *, verify: bool = True
) -> Checkpoint:
    """Load and validate a checkpoint written by ``save_checkpoint``.

    Tensors land on ``map_location``; on the CPU, weights are mapped from
    ``model.safetensors`` copy-on-write and read on first use. Each file's SHA-256 is
    checked against the one recorded when it was written (``verify=False`` skips that
    full read, e.g. for huge files on slow storage). Raises FileNotFoundError when
    ``path`` does not exist, and CheckpointError (a ValueError) when it is not a
    DeepSeek checkpoint, is incomplete or corrupted (naming the file), was written by a
    newer format, or its trainer state would need to execute code to load (it is only
    ever read with ``weights_only=True``).

    Example:
        >>> import tempfile, torch
        >>> root = tempfile.mkdtemp()
        >>> _ = save_checkpoint(f"{root}/ckpt", {"w": torch.ones(2)}, {"step": 3})
        >>> ckpt = load_checkpoint(f"{root}/ckpt")
        >>> ckpt.kind, ckpt.trainer_state, ckpt.model_state["w"]
        ('full', {'step': 3}, tensor([1., 1.]))
    """
    device = resolve_map_location(map_location)
    directory = resolve_checkpoint_dir(Path(path).expanduser())
    meta = read_meta(directory, verify=verify)
    model_state = (
        {} if meta["kind"] == "sharded" else load_tensors(directory / WEIGHTS_FILE, device)
    )
    trainer_state = None
    if meta["kind"] in ("full", "sharded"):
        trainer_state = _load_trainer_state(directory / TRAINER_STATE_FILE, device)
    return Checkpoint(
        directory, model_state, trainer_state, meta.get("metadata") or {}, meta["kind"]
    )


def latest_checkpoint(root: PathLike) -> Path | None:
    """The newest complete checkpoint directly under ``root``, or None if there is none
    (or ``root`` does not exist).

    Newest means the highest ``metadata["global_step"]`` when every candidate has one,
    else the most recently written. Temporary directories of interrupted saves and
    incomplete checkpoints are skipped; a backup left by a crash mid-replace counts in
    place of the checkpoint it backs up.
    """
    root = Path(root).expanduser()
    if not root.exists():
        return None
    if not root.is_dir():
        raise NotADirectoryError(f"latest_checkpoint needs a directory, {root} is a file")
    candidates = []
    for child in root.iterdir():
        if is_staging_name(child.name):
            target = backup_target(child.name)
            if target is None or os.path.lexists(root / target):
                continue
        if not child.is_dir():
            continue
        try:
            meta = read_meta(child)
        except CheckpointError:
            continue
        step = (meta.get("metadata") or {}).get("global_step")
        has_step = isinstance(step, int) and not isinstance(step, bool)
        mtime = (child / META_FILE).stat().st_mtime_ns
        candidates.append((has_step, step if has_step else 0, mtime, child.name, child))
    if not candidates:
        return None
    if all(c[0] for c in candidates):
        return max(candidates, key=lambda c: c[1:4])[-1]
    return max(candidates, key=lambda c: c[2:4])[-1]


def resolve_checkpoint_dir(path: Path) -> Path:
    """``path`` itself, or the backup a crash mid-replace left for it."""
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(
                f"{path} is a file, not a DeepSeek checkpoint directory; to load weights "
                "from a bare .safetensors file use load_weights(model, path)"
            )
        return path
    backup = find_backup(path, _is_complete)
    if backup is None:
        raise FileNotFoundError(f"no checkpoint at {path}: the path does not exist")
    warnings.warn(
        f"{path} is missing because a save replacing it was interrupted; loading the "
        f"previous complete checkpoint from {backup} (the next save to {path} moves it back)",
        stacklevel=3,
    )
    return backup


def _is_complete(directory: Path) -> bool:
    try:
        read_meta(directory)
    except (CheckpointError, OSError):
        return False
    return True


def _check_replaceable(path: Path) -> None:
    """Only ever replace a checkpoint (or an empty directory), never other data."""
    if not os.path.lexists(path):
        return
    if path.is_dir() and not any(path.iterdir()):
        return
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        ours = isinstance(meta, dict) and meta.get("format") == FORMAT_NAME
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise FileExistsError(
            f"{path} exists and is not a DeepSeek checkpoint; refusing to replace it. "
            "Choose another path or remove it first"
        )


def _new_meta(weights_only: bool, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping (dict) or None, got {type(metadata).__name__}")
    from deepseek import __version__

    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "deepseek_version": __version__,
        "kind": "weights" if weights_only else "full",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "written_ns": time.time_ns(),  # orders saves finer than file-system timestamps
        "files": None,  # filled in once the files are written
        "metadata": dict(metadata or {}),
    }
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        # ValueError means a circular reference, which the path search cannot walk.
        where = (
            _first_non_json(meta["metadata"], "metadata") if isinstance(exc, TypeError) else None
        )
        raise TypeError(
            f"metadata must be JSON-serialisable (dicts with str keys, lists, str, int, "
            f"float, bool, None): {where or exc}. Convert it first, e.g. tensor.item(), "
            "or put it in trainer_state"
        ) from None
    return meta


def _first_non_json(value: Any, where: str) -> str | None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int | float | bool) and key is not None:
                return f"{where} has a key of type {type(key).__name__}"
            found = _first_non_json(item, f"{where}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _first_non_json(item, f"{where}[{i}]")
            if found:
                return found
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return None
    return f"{where} is a {type(value).__name__}"


def _save_trainer_state(state: Mapping[str, Any], file: Path) -> str:
    """Write ``state`` with torch.save and return the SHA-256 of the bytes written."""
    with open(file, "wb") as f:
        writer = HashingWriter(f)
        try:
            torch.save(dict(state), writer)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise TypeError(f"trainer_state cannot be saved with torch.save: {exc}") from None
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None
            raise
        f.flush()
        os.fsync(f.fileno())
    # Fail now rather than at resume time, days later: load it back the way
    # load_checkpoint will (mmap keeps this cheap: tensor data is not read).
    try:
        torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise TypeError(
            "trainer_state holds objects that torch.load(weights_only=True) refuses"
            f"{_refused_global(exc)}; store tensors, plain Python data and state_dict()s only"
        ) from None
    return writer.hexdigest()


def _load_trainer_state(file: Path, device: str) -> dict[str, Any]:
    try:
        return torch.load(file, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_global(exc)
        if refused:
            raise CheckpointError(
                f"{file} holds an object whose loading would execute code{refused}; "
                "DeepSeek loads trainer state only with torch.load(weights_only=True) and "
                "refuses to run code from a file. Do not use this checkpoint unless you "
                "trust its source"
            ) from None
        raise CheckpointError(
            f"{file} is corrupted or is not a plain torch.save file: "
            "torch.load(weights_only=True) rejected it, and DeepSeek never unpickles "
            "arbitrary objects (or executes code) from a checkpoint"
        ) from None
    except (RuntimeError, EOFError, ValueError, KeyError, OSError) as exc:
        if isinstance(exc, OSError) and type(exc) is not OSError:
            raise  # PermissionError and the like are not about the file's content
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{file} is incomplete or corrupted: torch.load failed ({first_line})"
        ) from None


def _refused_global(exc: Exception) -> str:
    match = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return f" ({match.group(1)})" if match else ""


def resolve_map_location(map_location: str | torch.device) -> str:
    """``map_location`` as a device string, checked to exist (safetensors needs a string)."""
    if not isinstance(map_location, str | torch.device):
        raise TypeError(
            f"map_location must be a device string or torch.device, got "
            f"{type(map_location).__name__}"
        )
    try:
        device = torch.device(map_location)
    except RuntimeError:
        raise ValueError(f"map_location={map_location!r} is not a valid device") from None
    is_available = getattr(getattr(torch, device.type, None), "is_available", None)
    if device.type != "cpu" and is_available is not None and not is_available():
        raise ValueError(
            f"map_location={map_location!r}, but no {device.type} device is "
            "available; use map_location='cpu'"
        )
    return str(device)
