"""Write a directory under a temporary name, then rename it into place.

At every instant a complete checkpoint exists either at ``path`` or, in the short gap
while an existing one is being replaced, at its backup name ``.<name>.old-<random>``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from deepseek.checkpoint.format import OLD_TAG, TMP_TAG


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Make renames and new entries in ``path`` durable (a no-op where unsupported)."""
    if os.name == "nt":  # Windows cannot open a directory; NTFS journals metadata
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(
    path: str | os.PathLike[str], write: Callable[[Path], object], *, durable: bool = True
) -> Path:
    """Let ``write(tmp)`` fill a temporary file next to ``path``, then rename it into place:
    readers see the old file or the complete new one, never a truncated one, and a failed
    write leaves nothing behind. ``durable`` fsyncs the file before the rename (a crash
    right after cannot leave an empty file under the final name).

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "notes.txt"
    >>> write_atomically(target, lambda tmp: tmp.write_text("done")).read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real suffix last: some writers (matplotlib, h5py, safetensors) look at it.
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".gz") else path.suffix
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        if durable:
            fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def make_staging_dir(path: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{path.name}{TMP_TAG}", dir=path.parent))


def remove_dir(path: Path) -> None:
    if path.is_symlink():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def commit_dir(staged: Path, path: Path) -> None:
    """Rename the complete directory ``staged`` to ``path``, replacing what is there."""
    parent = path.parent
    if not os.path.lexists(path):
        os.rename(staged, path)
        fsync_dir(parent)
        return
    backup = parent / f".{path.name}{OLD_TAG}{secrets.token_hex(4)}"
    os.rename(path, backup)
    fsync_dir(parent)
    try:
        os.rename(staged, path)
    except BaseException:
        os.rename(backup, path)  # put the old checkpoint back before reporting
        raise
    fsync_dir(parent)
    remove_dir(backup)


def find_backup(path: Path, is_complete: Callable[[Path], bool]) -> Path | None:
    """The complete backup left when a crash hit between the two renames of a replace."""
    if os.path.lexists(path) or not path.parent.is_dir():
        return None
    prefix = f".{path.name}{OLD_TAG}"
    backups = [p for p in path.parent.iterdir() if p.name.startswith(prefix) and is_complete(p)]
    return max(backups, key=lambda p: p.stat().st_mtime_ns, default=None)


def recover(path: Path, is_complete: Callable[[Path], bool]) -> None:
    """Undo what an interrupted save left: move a backup back, delete staging dirs.

    Assumes one writer per checkpoint path (as a training run has).
    """
    backup = find_backup(path, is_complete)
    if backup is not None:
        os.rename(backup, path)
        fsync_dir(path.parent)
    prefixes = (f".{path.name}{TMP_TAG}", f".{path.name}{OLD_TAG}")
    for leftover in path.parent.iterdir():
        if leftover.name.startswith(prefixes):
            remove_dir(leftover)
