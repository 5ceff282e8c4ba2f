"""What a DeepSeek checkpoint directory looks like, and how to tell a complete one.

A checkpoint is a directory holding ``model.safetensors``, optionally ``trainer_state.pt``
(a "full" checkpoint, as opposed to "weights"), and ``meta.json``, which is written last
and records every other file's size (a truncated copy is recognised at once) and its
SHA-256 checksum (a flipped bit is recognised when the checkpoint is loaded).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

FORMAT_NAME = "deepseek-checkpoint"
FORMAT_VERSION = 1
META_FILE = "meta.json"
WEIGHTS_FILE = "model.safetensors"
TRAINER_STATE_FILE = "trainer_state.pt"

SHARDED_DIR = "sharded"  # torch.distributed.checkpoint files of a "sharded" checkpoint
# The files each kind of checkpoint must have ("sharded": deepseek-dist's strategies write
# the model (and optimizer) shards with torch.distributed.checkpoint).
REQUIRED_FILES = {
    "weights": {WEIGHTS_FILE},
    "full": {WEIGHTS_FILE, TRAINER_STATE_FILE},
    "sharded": {TRAINER_STATE_FILE, f"{SHARDED_DIR}/.metadata"},
}

# Sibling directories a save leaves behind only when it is interrupted:
# ".<name>.tmp-<random>" is a checkpoint being written (never complete until renamed),
# ".<name>.old-<random>" is the previous checkpoint while it is being replaced.
TMP_TAG = ".tmp-"
OLD_TAG = ".old-"


CHECKSUM_ALGORITHM = "sha256"
_CHUNK = 1 << 22


class CheckpointError(ValueError):
    """A path is not a DeepSeek checkpoint, or the checkpoint is incomplete or corrupted."""


class HashingWriter(io.RawIOBase):
    """A write-only file wrapper that hashes what passes through it (checksum while writing)."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.hash = hashlib.new(CHECKSUM_ALGORITHM)
        self.error: OSError | None = None  # torch.save turns it into an opaque RuntimeError

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.hash.update(data)
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def hexdigest(self) -> str:
        return self.hash.hexdigest()


def is_safe_member(name: str) -> bool:
    """A relative path inside a checkpoint directory: no ``..``, not absolute."""
    parts = name.split("/")
    return (
        isinstance(name, str)
        and bool(name)
        and not name.startswith("/")
        and "\\" not in name
        and all(part not in ("", ".", "..") for part in parts)
    )


def list_files(directory: Path) -> list[str]:
    """Every file under ``directory`` (recursively) except meta.json, as posix paths."""
    return sorted(
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and p.name != META_FILE
    )


def file_checksum(path: Path) -> str:
    """The SHA-256 of ``path``'s content, read in 4 MiB chunks."""
    digest = hashlib.new(CHECKSUM_ALGORITHM)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_staging_name(name: str) -> bool:
    """True for the temporary and backup directories that ``save_checkpoint`` uses."""
    return name.startswith(".") and (TMP_TAG in name or OLD_TAG in name)


def backup_target(name: str) -> str | None:
    """The checkpoint name a backup directory ``.<name>.old-<random>`` belongs to."""
    if not name.startswith(".") or OLD_TAG not in name:
        return None
    return name[1 : name.rindex(OLD_TAG)]


def read_meta(directory: Path, verify: bool = False) -> dict[str, Any]:
    """Read and validate ``directory/meta.json`` and the files it lists.

    Raises CheckpointError when the directory is not a DeepSeek checkpoint, was written
    by a newer format, or has a missing or truncated file; with ``verify=True`` also when
    a file's content does not match the checksum recorded when it was written.
    """
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(_describe_foreign(directory))
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{meta_path} is corrupted (not valid JSON: {exc}); the checkpoint in "
            f"{directory} cannot be trusted"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(
            f"{directory} is not a DeepSeek checkpoint: its meta.json has format {found!r}, "
            f"expected {FORMAT_NAME!r}"
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{meta_path} is corrupted: format_version is {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{directory} was written by a newer DeepSeek (checkpoint format version {version}, "
            f"deepseek {meta.get('deepseek_version', '?')}); this deepseek-core reads format "
            f"version {FORMAT_VERSION}: upgrade deepseek-core to load it"
        )
    _check_files(directory, meta)
    if verify:
        verify_checksums(directory, meta)
    return meta


def verify_checksums(
    directory: Path, meta: dict[str, Any], names: Iterable[str] | None = None
) -> None:
    """Recompute the SHA-256 of each file (or of ``names``) and compare it with
    ``meta["checksums"]``. Checkpoints written before checksums existed pass unchecked.
    """
    checksums = meta.get("checksums")
    if checksums is None:
        return
    if not isinstance(checksums, dict) or set(checksums) != set(meta["files"]):
        raise CheckpointError(
            f"{directory / META_FILE} is corrupted: its checksums do not list the files it records"
        )
    for name, expected in checksums.items():
        if names is not None and name not in names:
            continue
        actual = file_checksum(directory / name)
        if actual != expected:
            raise CheckpointError(
                f"{directory / name} is corrupted: its content does not match the "
                f"{CHECKSUM_ALGORITHM} checksum recorded when it was written (expected "
                f"{str(expected)[:12]}..., found {actual[:12]}...): the file was modified "
                "or damaged on disk. Use another checkpoint or restore this file from a "
                "copy; pass verify=False to skip the check (not recommended)"
            )


def _check_files(directory: Path, meta: dict[str, Any]) -> None:
    files = meta.get("files")
    kind = meta.get("kind")
    if (
        not isinstance(files, dict)
        or kind not in REQUIRED_FILES
        or not REQUIRED_FILES[kind] <= set(files)
    ):
        raise CheckpointError(
            f"{directory / META_FILE} is corrupted: it does not list the files of a "
            f"{kind!r} checkpoint"
        )
    for name, size in files.items():
        if not is_safe_member(name):
            raise CheckpointError(
                f"{directory / META_FILE} is corrupted: it lists {name!r}, which is not a "
                "file inside the checkpoint directory"
            )
        file = directory / name
        if not file.is_file():
            raise CheckpointError(
                f"checkpoint {directory} is incomplete or corrupted: {name} is missing"
            )
        actual = file.stat().st_size
        if actual != size:
            raise CheckpointError(
                f"checkpoint {directory} is incomplete or corrupted: {name} has {actual} "
                f"bytes, meta.json recorded {size}"
            )


def _describe_foreign(directory: Path) -> str:
    if is_staging_name(directory.name):
        return (
            f"{directory} is a temporary directory left by an interrupted save_checkpoint, "
            "not a complete checkpoint; load the checkpoint it belongs to instead"
        )
    entries = sorted(p.name for p in directory.iterdir())
    shown = ", ".join(entries[:8]) + (f", ... ({len(entries)} entries)" if len(entries) > 8 else "")
    message = (
        f"{directory} is not a DeepSeek checkpoint (no {META_FILE}); "
        f"it contains: {shown or 'nothing'}"
    )
    if any(name.endswith(".safetensors") for name in entries):
        message += ". To load a bare .safetensors file, use load_weights(model, <file>)"
    return message
