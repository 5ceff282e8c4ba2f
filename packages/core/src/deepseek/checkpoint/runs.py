"""Which checkpoint is "last" or "best", and whose it is.

Every checkpoint ``ModelCheckpoint`` writes records, in ``meta.json``'s metadata, the
run that wrote it: ``metadata["run"] = {"id", "seq", "callback", "monitor", "mode",
"score", "role"}``. A run keeps its id across resumes (it is part of the callback's
state), and ``seq`` counts its saves; every checkpoint records the clock time of its
save (``written_ns``). "last" is the newest save in the folder: the newest checkpoint
of the run that wrote there last (the folder's owner), not the highest step any run
ever reached there.

    >>> import tempfile, torch
    >>> from deepseek.checkpoint import save_checkpoint, resolve_checkpoint_path
    >>> root = tempfile.mkdtemp()
    >>> for step in (30, 10):  # an old long run, then a new short one
    ...     _ = save_checkpoint(f"{root}/step_{step}", {"w": torch.ones(1)}, {},
    ...                         {"global_step": step})
    >>> resolve_checkpoint_path(root, "last").name  # the newest save, not the highest step
    'step_10'
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepseek.checkpoint.format import (
    META_FILE,
    CheckpointError,
    backup_target,
    is_staging_name,
    read_meta,
)

if TYPE_CHECKING:
    from deepseek.training import Trainer

RUN_KEY = "run"
RESUMABLE = ("full", "sharded")  # kinds with a trainer state


def is_plain_name(name: str) -> bool:
    """A single path component: no separators, not ``.`` / ``..``, not absolute."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and os.sep not in name
        and (os.altsep is None or os.altsep not in name)
    )


def run_info(meta: dict[str, Any]) -> dict[str, Any]:
    """The ``run`` record of a checkpoint's metadata (``{}`` for checkpoints without one)."""
    info = (meta.get("metadata") or {}).get(RUN_KEY)
    return info if isinstance(info, dict) else {}


def _complete(path: Path, require_full: bool) -> dict[str, Any] | None:
    try:
        meta = read_meta(path)
    except (CheckpointError, OSError):
        return None
    if require_full and meta.get("kind") not in RESUMABLE:
        return None
    return meta


def _candidates(folder: Path, require_full: bool) -> list[tuple[Path, dict[str, Any]]]:
    found = []
    if not folder.is_dir():
        return found
    for child in folder.iterdir():
        if is_staging_name(child.name):
            target = backup_target(child.name)
            if target is None or os.path.lexists(folder / target):
                continue
        if child.is_dir() and (meta := _complete(child, require_full)) is not None:
            found.append((child, meta))
    return found


def _written_at(path: Path, meta: dict[str, Any]) -> tuple[int, int]:
    """Order of writing: the save's clock time (meta.json's mtime for checkpoints written
    before it was recorded), then the run's save counter."""
    written = meta.get("written_ns")
    if not isinstance(written, int):
        try:
            written = (path / META_FILE).stat().st_mtime_ns
        except OSError:
            written = 0
    seq = run_info(meta).get("seq")
    return written, seq if isinstance(seq, int) else 0


def last_in_folder(folder: Path, require_full: bool = False) -> Path | None:
    """The newest checkpoint of the run that owns ``folder``: the most recently saved."""
    candidates = _candidates(folder, require_full)
    if not candidates:
        return None
    return max(candidates, key=lambda c: _written_at(*c))[0]


def best_in_folder(folder: Path) -> Path | None:
    """The best-scored checkpoint of the run that owns ``folder`` (by the monitor and
    mode it recorded), or None when that run recorded no scores."""
    last = last_in_folder(folder)
    if last is None:
        return None
    owner = run_info(read_meta(last)).get("id")
    scored = []
    for path, meta in _candidates(folder, require_full=False):
        info = run_info(meta)
        score = info.get("score")
        if info.get("id") != owner or info.get("role") == "last":
            continue
        if isinstance(score, int | float) and not math.isnan(score):
            sign = -1.0 if info.get("mode") == "max" else 1.0
            scored.append((sign * score, -_written_at(path, meta)[0], path))
    return min(scored)[2] if scored else None


def _trainer_roots(trainer: Trainer) -> list[Path]:
    from deepseek.training.checkpointing import checkpoint_roots

    return checkpoint_roots(trainer)


def resolve_checkpoint_path(
    source: Trainer | str | os.PathLike,
    which: str | os.PathLike = "last",
    *,
    require_full: bool = False,
) -> Path:
    """The checkpoint directory that ``which`` names for ``source``.

    ``source`` is a Trainer (its ModelCheckpoint callbacks and
    ``<default_root_dir>/checkpoints``) or a folder holding checkpoints. ``which``:

    - ``"last"``: the newest checkpoint of the run that owns the folder (see the module
      docstring); with several folders, the most recently written of their "last"s.
    - ``"best"``: a Trainer's ``ModelCheckpoint.best_model_path``, else the best-scored
      checkpoint of the owning run (the monitor and mode it recorded).
    - anything else: a path to one checkpoint directory, checked to be complete.

    ``require_full=True`` (resuming) skips weights-only checkpoints. Raises
    FileNotFoundError when nothing is found (naming the folders searched) and
    CheckpointError when an explicit path is not a complete checkpoint.

    Example:
        >>> import tempfile, torch
        >>> from deepseek.checkpoint import save_checkpoint
        >>> root = tempfile.mkdtemp()
        >>> _ = save_checkpoint(f"{root}/a", {"w": torch.ones(1)})
        >>> resolve_checkpoint_path(root, "last").name
        'a'
    """
    if str(which) not in ("last", "best"):
        path = Path(which).expanduser()
        if not path.exists():
            from deepseek.checkpoint.io import resolve_checkpoint_dir

            path = resolve_checkpoint_dir(path)  # a crash mid-replace left a backup?
        meta = read_meta(path)
        if require_full and meta.get("kind") not in RESUMABLE:
            raise CheckpointError(
                f"{path} is a weights-only checkpoint: it has no optimizer or progress state, "
                "so training cannot resume from it. Load it with "
                "deepseek.checkpoint.load_weights(model, path)"
            )
        return path

    if isinstance(source, str | os.PathLike):
        roots = [Path(source).expanduser()]
        callbacks: list[Any] = []
    else:
        roots = _trainer_roots(source)
        callbacks = list(getattr(source, "callbacks", []))

    if str(which) == "best":
        for cb in callbacks:
            best = getattr(cb, "best_model_path", None)
            if best and _complete(Path(best), require_full) is not None:
                return Path(best)
        found = [p for root in roots if (p := best_in_folder(root)) is not None]
        if found:
            return found[0]
        raise FileNotFoundError(
            f"no best checkpoint: no checkpoint under {_shown(roots)} records a monitored "
            "score; save with ModelCheckpoint(monitor='val_loss') (or another logged "
            "metric), or use 'last' or a path"
        )

    lasts = [p for root in roots if (p := last_in_folder(root, require_full)) is not None]
    if not lasts:
        kind = "full checkpoint" if require_full else "checkpoint"
        raise FileNotFoundError(f"found no {kind} under {_shown(roots)}")
    return max(lasts, key=lambda p: _written_at(p, read_meta(p)))


def describe_checkpoint(path: str | os.PathLike) -> str:
    """One line saying what a checkpoint is, for "resumed from ..." messages.

    Example:
        >>> import tempfile, torch
        >>> from deepseek.checkpoint import save_checkpoint
        >>> p = save_checkpoint(tempfile.mkdtemp() + "/c", {"w": torch.ones(1)}, {},
        ...                     {"epoch": 2, "global_step": 20})
        >>> describe_checkpoint(p).split(" (")[1].split(", saved")[0]
        'epoch 2, step 20'
    """
    path = Path(path)
    try:
        meta = read_meta(path)
    except (CheckpointError, OSError):
        return str(path)
    metadata = meta.get("metadata") or {}
    parts = []
    run = run_info(meta).get("id")
    if run:
        parts.append(f"run {run}")
    for key, label in (("epoch", "epoch"), ("global_step", "step")):
        if key in metadata:
            parts.append(f"{label} {metadata[key]}")
    if meta.get("kind") == "weights":
        parts.append("weights only")
    parts.append(f"saved {meta.get('created', '?')}")
    return f"{path} ({', '.join(parts)})"


def _shown(roots: list[Path]) -> str:
    return ", ".join(str(r) for r in roots) or "(no checkpoint folder configured)"
