"""HDF5 datasets: read samples (or patches of them) from one or many HDF5 files.

Layout rule: in every HDF5 dataset that ``H5Dataset`` reads, **axis 0 is the sample axis**.
A file with ``image`` of shape ``(N, 1, 64, 64)`` and ``label`` of shape ``(N,)`` holds
``N`` samples; sample ``i`` is ``(image[i], label[i])``. A single big volume is stored as
one sample: shape ``(1, D, H, W)``.

Example:
    >>> import tempfile, numpy as np, torch
    >>> from deepseek.utils.data import DataLoader, H5Dataset, write_h5
    >>> tmp = tempfile.mkdtemp()
    >>> path = write_h5(f"{tmp}/train.h5", {
    ...     "image": np.random.rand(10, 1, 8, 8).astype("float32"),
    ...     "label": np.arange(10),
    ... })
    >>> ds = H5Dataset(path, keys=["image", "label"])
    >>> image, label = ds[3]
    >>> image.shape, int(label)
    (torch.Size([1, 8, 8]), 3)
    >>> images, labels = next(iter(DataLoader(ds, batch_size=4, num_workers=2)))
    >>> images.shape, labels.tolist()
    (torch.Size([4, 1, 8, 8]), [0, 1, 2, 3])
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import itertools
import math
import operator
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["H5Dataset", "H5KeyError", "write_h5"]

PathLike = str | os.PathLike

# A process keeps at most this many files open; the oldest handle is closed past it, so a
# dataset over thousands of files does not run out of file descriptors.
_MAX_OPEN_FILES = 64


class H5KeyError(KeyError):
    """A requested key is not a dataset in an HDF5 file (a ``KeyError`` with a readable message)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class _FileInfo:
    path: Path
    n_samples: int
    patched: tuple[bool, ...]  # per key: sliced into patches (True) or repeated per patch
    grid: np.ndarray | None  # (n_patches, len(patch_size)) patch start offsets, or None

    @property
    def n_items(self) -> int:
        return self.n_samples * (1 if self.grid is None else len(self.grid))


def _open_h5(path: Path, swmr: bool) -> h5py.File:
    """Open ``path`` read-only, turning h5py's errors into one clear error naming the file."""
    if not path.exists():
        raise FileNotFoundError(f"HDF5 file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not an HDF5 file")
    try:
        return h5py.File(path, "r", swmr=swmr)
    except OSError as err:
        if not h5py.is_hdf5(path):
            raise ValueError(
                f"{path} is not an HDF5 file (no HDF5 signature); pass .h5 files written "
                "with h5py or write_h5"
            ) from None
        raise OSError(f"cannot open HDF5 file {path}: {err}.{_open_hint(str(err))}") from None


def _open_hint(message: str) -> str:
    """What to do about an h5py open error. Matches whole phrases: "lock" alone also
    matches "superblock" ("sblock") in the error of a truncated file."""
    text = message.lower()
    if "truncated file" in text or "eof =" in text:
        return " The file is truncated (an interrupted copy or write): copy or write it again"
    if any(p in text for p in ("unable to lock file", "file locking", "already open")):
        return (
            " Another process may be writing it: have the writer enable SWMR mode and "
            "read with swmr=True, or wait until the writer closes the file."
        )
    return ""


def _read_error(err: OSError, path: Path, samples: str) -> OSError:
    """A failed chunk read, naming the file and the samples."""
    hint = ""
    text = str(err).lower()
    if any(p in text for p in ("checksum", "fletcher", "filter returned failure")):
        hint = (
            " A filter (the fletcher32 checksum write_h5 stores, or decompression) rejected "
            "the stored bytes: the file was damaged after it was written. Restore it from "
            "a copy or write it again"
        )
    return OSError(f"cannot read {samples} from HDF5 file {path}: {err}.{hint}")


def _dataset_names(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _patch_starts(size: int, patch: int, stride: int) -> list[int]:
    """Start offsets of a regular grid along one axis; the last patch is clamped inside."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] + patch < size:
        starts.append(size - patch)
    return starts


def _as_output(value: Any, to_tensor: bool) -> Any:
    if not to_tensor or not isinstance(value, np.ndarray | np.generic):
        return value
    if value.dtype.kind not in "biufc":  # strings, compound types: torch has no dtype for them
        return value
    if not value.dtype.isnative:  # torch only takes native byte order
        value = value.astype(value.dtype.newbyteorder("="))
    return torch.as_tensor(value)


class H5Dataset(Dataset):
    """Samples read from one or many HDF5 files by dataset key.

    Args:
        paths: one HDF5 file or a sequence of them; their samples are concatenated in order.
        keys: HDF5 dataset names (``"image"``, ``"group/label"``) to read for every sample.
        transform: called on each sample (the tuple or dict) before it is returned.
        as_dict: return ``{key: value}`` instead of a tuple in key order.
        patch_size: cut every sample into patches of this spatial size (2-D or 3-D, any
            length ``k``) and make each patch one item. See "Patches" below.
        patch_stride: step between patch starts (an int or one per axis); default
            ``patch_size`` (non-overlapping). Smaller strides give overlapping patches.
        swmr: open files in SWMR (single-writer multiple-reader) read mode, to read a file
            while another process appends to it. The *writer* must enable it
            (``h5py.File(..., libver="latest")`` then ``f.swmr_mode = True``; ``write_h5(...,
            swmr=True)`` makes such a file). The length is fixed when the dataset is built:
            call :meth:`refresh` to see samples appended since.
        to_tensor: convert numeric arrays to ``torch.Tensor`` (otherwise numpy arrays are
            returned; strings stay ``bytes`` either way).

    Files are opened once at construction to validate them (missing file, not HDF5, missing
    key, different lengths: each a clear error naming the file and key) and closed again, so
    the dataset pickles cheaply to ``DataLoader`` workers. Each process then opens its own
    read handles on first access and keeps them; a forked worker never reuses its parent's.
    ``DataLoader`` batches go through :meth:`__getitems__`, which reads runs of consecutive
    indices with one slice per key.

    Patches: axis 0 is always the sample axis. With ``patch_size`` of length ``k``, a key
    whose per-sample array has at least ``k`` axes is cut on its last ``k`` axes (earlier
    axes, such as channels, are kept whole); all such keys in a file must have the same last
    ``k`` sizes and are sliced identically (image and segmentation mask). Keys with fewer than
    ``k`` axes per sample (a scalar class label, a spacing vector) are repeated for every
    patch. The grid starts at 0 with ``patch_stride`` steps; the last patch along an axis is
    moved back to end at the border, so every voxel is covered and every patch is full size.
    Only the patch is read from disk (an h5py hyperslab), never the whole volume: store
    volumes chunked (``write_h5`` does) so that a patch touches few chunks.

    Example:
        >>> import tempfile, numpy as np
        >>> from deepseek.utils.data import H5Dataset, write_h5
        >>> path = write_h5(f"{tempfile.mkdtemp()}/vol.h5", {
        ...     "image": np.zeros((2, 1, 32, 32, 32), "float32"), "label": np.array([0, 1])})
        >>> ds = H5Dataset(path, patch_size=(16, 16, 16), as_dict=True)
        >>> len(ds), ds[0]["image"].shape, int(ds[15]["label"])
        (16, torch.Size([1, 16, 16, 16]), 1)
    """

    def __init__(
        self,
        paths: PathLike | Sequence[PathLike],
        keys: str | Sequence[str] = ("image", "label"),
        transform: Callable[[Any], Any] | None = None,
        *,
        as_dict: bool = False,
        patch_size: Sequence[int] | None = None,
        patch_stride: int | Sequence[int] | None = None,
        swmr: bool = False,
        to_tensor: bool = True,
    ) -> None:
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("H5Dataset needs at least one HDF5 file path")
        self.keys = (keys,) if isinstance(keys, str) else tuple(keys)
        if not self.keys or not all(isinstance(k, str) for k in self.keys):
            raise TypeError(f"keys must be a non-empty sequence of strings, got {keys!r}")
        if len(set(self.keys)) != len(self.keys):
            raise ValueError(f"keys must be unique, got {list(self.keys)}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.transform = transform
        self.as_dict = as_dict
        self.swmr = swmr
        self.to_tensor = to_tensor
        self.patch_size, self.patch_stride = self._check_patch_args(patch_size, patch_stride)
        # Per process: file number -> (open file, its h5py datasets in key order). Looking a
        # dataset up by name costs more than reading a small sample, so it is done once.
        self._handles: dict[int, tuple[h5py.File, list[h5py.Dataset]]] = {}
        self._pid: int | None = None
        self._build_index()

    @staticmethod
    def _check_patch_args(
        patch_size: Sequence[int] | None, patch_stride: int | Sequence[int] | None
    ) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
        if patch_size is None:
            if patch_stride is not None:
                raise ValueError("patch_stride needs patch_size")
            return None, None
        if isinstance(patch_size, int) or not all(isinstance(p, int) for p in patch_size):
            raise TypeError(
                f"patch_size must be a sequence of ints like (64, 64), got {patch_size}"
            )
        size = tuple(patch_size)
        stride = size if patch_stride is None else patch_stride
        stride = (stride,) * len(size) if isinstance(stride, int) else tuple(stride)
        if not size or len(stride) != len(size) or min(size + stride) < 1:
            raise ValueError(
                f"patch_size and patch_stride must be positive and of the same length, got "
                f"patch_size={size}, patch_stride={stride}"
            )
        return size, stride

    def _build_index(self) -> None:
        self._files = [self._inspect(path) for path in self.paths]
        self._ends = list(itertools.accumulate(info.n_items for info in self._files))
        self._starts = [end - info.n_items for end, info in zip(self._ends, self._files)]

    def _inspect(self, path: Path) -> _FileInfo:
        """Open ``path`` once, check every key, and work out its samples and patch grid."""
        with _open_h5(path, self.swmr) as f:
            dsets = []
            for key in self.keys:
                obj = f.get(key)
                if not isinstance(obj, h5py.Dataset):
                    found = "a group" if isinstance(obj, h5py.Group) else "missing"
                    raise H5KeyError(
                        f"key {key!r} is {found} in {path}; datasets available: {_dataset_names(f)}"
                    )
                if obj.ndim == 0:
                    raise ValueError(
                        f"{path}: dataset {key!r} is a scalar; axis 0 must be the sample axis"
                    )
                dsets.append(obj)
            lengths = {key: d.shape[0] for key, d in zip(self.keys, dsets)}
            if len(set(lengths.values())) > 1:
                raise ValueError(
                    f"{path}: datasets have different lengths along the sample axis (axis 0): "
                    f"{lengths}; every key must hold the same number of samples"
                )
            n_samples = dsets[0].shape[0]
            if self.patch_size is None:
                return _FileInfo(path, n_samples, (False,) * len(dsets), None)
            return self._patch_grid(
                path, n_samples, {k: d.shape[1:] for k, d in zip(self.keys, dsets)}
            )

    def _patch_grid(self, path: Path, n_samples: int, shapes: dict[str, tuple]) -> _FileInfo:
        k = len(self.patch_size)
        spatial = {key: s[-k:] for key, s in shapes.items() if len(s) >= k}
        if not spatial:
            raise ValueError(
                f"{path}: no key has {k} axes per sample to cut patches of size "
                f"{self.patch_size} from; per-sample shapes: {shapes}"
            )
        if len(set(spatial.values())) > 1:
            raise ValueError(
                f"{path}: keys cut into patches must share their last {k} sizes, got {spatial}"
            )
        size = next(iter(spatial.values()))
        if any(p > s for p, s in zip(self.patch_size, size)):
            raise ValueError(
                f"{path}: patch_size {self.patch_size} is larger than the sample size {size} "
                f"of keys {list(spatial)}"
            )
        axes = [_patch_starts(*a) for a in zip(size, self.patch_size, self.patch_stride)]
        grid = np.array(list(itertools.product(*axes)), dtype=np.int64)
        return _FileInfo(path, n_samples, tuple(key in spatial for key in self.keys), grid)

    def refresh(self) -> None:
        """Close handles and re-read every file's length (to see samples appended under SWMR)."""
        self.close()
        self._build_index()

    def __len__(self) -> int:
        return self._ends[-1]

    def __repr__(self) -> str:
        patches = "" if self.patch_size is None else f", patch_size={self.patch_size}"
        return (
            f"H5Dataset(files={len(self.paths)}, items={len(self)}, keys={list(self.keys)}"
            f"{patches})"
        )

    def _indices(self, indices: Sequence[int]) -> np.ndarray:
        n = len(self)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            bad = idx[(idx < -n) | (idx >= n)][0]
            raise IndexError(f"index {bad} is out of range for H5Dataset of length {n}")
        return np.where(idx < 0, idx + n, idx)

    def _locate(self, index: int) -> tuple[int, int, np.ndarray | None]:
        """``(file number, sample in that file, patch start offsets or None)``."""
        i, n = operator.index(index), len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for H5Dataset of length {n}")
        i = i + n if i < 0 else i
        f = bisect.bisect_right(self._ends, i)
        info, local = self._files[f], i - self._starts[f]
        if info.grid is None:
            return f, local, None
        sample, patch = divmod(local, len(info.grid))
        return f, sample, info.grid[patch]

    def locate(self, index: int) -> tuple[Path, int, tuple[int, ...] | None]:
        """Where item ``index`` comes from: ``(file, sample in that file, patch start or None)``."""
        f, sample, start = self._locate(index)
        return self.paths[f], sample, None if start is None else tuple(int(s) for s in start)

    def _datasets(self, f: int) -> list[h5py.Dataset]:
        """This process's open datasets (in key order) of file ``f``, opened on first use."""
        if self._pid != os.getpid():
            # A forked worker inherits the parent's handles; HDF5 handles must not be shared
            # across processes, so drop the copies and open fresh ones here.
            self.close()
            self._pid = os.getpid()
        if f not in self._handles:
            if len(self._handles) >= _MAX_OPEN_FILES:
                self._handles.pop(next(iter(self._handles)))[0].close()
            handle = _open_h5(self._files[f].path, self.swmr)
            self._handles[f] = handle, [handle[key] for key in self.keys]
        return self._handles[f][1]

    def _finish(self, values: Sequence[Any]) -> Any:
        values = [_as_output(v, self.to_tensor) for v in values]
        sample = dict(zip(self.keys, values)) if self.as_dict else tuple(values)
        return self.transform(sample) if self.transform is not None else sample

    def __getitem__(self, index: int) -> Any:
        f, sample, start = self._locate(index)
        dsets = self._datasets(f)
        try:
            if start is None:
                values = [dset[sample] for dset in dsets]
            else:
                # Hyperslab selection: h5py reads only this patch from disk.
                window = tuple(slice(s, s + p) for s, p in zip(start, self.patch_size))
                values = [
                    dset[(sample, Ellipsis, *window) if cut else sample]
                    for dset, cut in zip(dsets, self._files[f].patched)
                ]
        except OSError as err:
            raise _read_error(err, self._files[f].path, f"sample {index}") from None
        return self._finish(values)

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """A batch of items (``DataLoader`` calls this): consecutive indices are one read."""
        if self.patch_size is not None:
            return [self[i] for i in indices]
        idx = self._indices(indices)
        file_of = np.searchsorted(self._ends, idx, side="right")
        out: list[Any] = [None] * len(idx)
        for f in np.unique(file_of).tolist():
            pos = np.flatnonzero(file_of == f)
            order = np.argsort(idx[pos], kind="stable")
            pos, local = pos[order].tolist(), (idx[pos][order] - self._starts[f]).tolist()
            dsets = self._datasets(f)
            # Runs of consecutive samples are read with one slice per key; a repeated index
            # starts a new run, so duplicates get their own arrays.
            begin = 0
            for end in range(1, len(local) + 1):
                if end < len(local) and local[end] == local[end - 1] + 1:
                    continue
                try:
                    blocks = [d[local[begin] : local[end - 1] + 1] for d in dsets]
                except OSError as err:
                    which = sorted(int(i) for i in idx[pos[begin:end]])
                    samples = (
                        f"samples {which[0]}..{which[-1]}"
                        if len(which) > 1
                        else (f"sample {which[0]}")
                    )
                    raise _read_error(err, self._files[f].path, samples) from None
                for row, p in enumerate(pos[begin:end]):
                    out[p] = self._finish([block[row] for block in blocks])
                begin = end
        return out

    def close(self) -> None:
        """Close this process's open file handles (they reopen on the next access)."""
        handles, self._handles = getattr(self, "_handles", {}), {}
        for handle, _ in handles.values():
            # At interpreter exit h5py may already be torn down; nothing is left to release.
            with contextlib.suppress(Exception):
                handle.close()

    def __enter__(self) -> H5Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # Open h5py handles cannot be pickled; the receiving process opens its own.
        state = self.__dict__.copy()
        state["_handles"], state["_pid"] = {}, None
        return state


def _default_chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Sample-oriented chunks: reading one sample touches about one chunk.

    Small samples are grouped to about 16 KiB per chunk; a sample above 1 MiB is split by
    halving its largest axis, so patches of big volumes read only the blocks they cover.
    """
    sample = list(shape[1:])
    sample_bytes = math.prod(sample) * itemsize
    if sample_bytes <= 1 << 20:
        per_chunk = min(max(shape[0], 1), max(1, (16 << 10) // max(sample_bytes, 1)))
        return (per_chunk, *(max(s, 1) for s in sample))
    while math.prod(sample) * itemsize > 1 << 20:
        axis = int(np.argmax(sample))
        sample[axis] = (sample[axis] + 1) // 2
    return (1, *sample)


def _as_array(key: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.ndim == 0:
        raise ValueError(
            f"write_h5: array {key!r} is a scalar; axis 0 is the sample axis, so pass at "
            "least a 1-D array (e.g. np.array([value]))"
        )
    if array.dtype.kind == "O":
        raise TypeError(f"write_h5: array {key!r} has dtype object; pass numeric or str arrays")
    return array


def write_h5(
    path: PathLike,
    arrays: Mapping[str, Any],
    *,
    compression: str | int | None = None,
    chunks: bool | tuple[int, ...] | Mapping[str, tuple[int, ...]] = True,
    swmr: bool = False,
    overwrite: bool = False,
    checksum: bool = True,
) -> Path:
    """Write ``{key: array}`` (axis 0 = samples, same length for all) to an HDF5 file.

    The file is written to a temporary name next to ``path`` and renamed when complete, so a
    crash never leaves a half-written dataset behind. Chunked datasets get an unlimited
    sample axis, so they can be appended to later (``dset.resize``).

    Args:
        path: destination file; its directory must exist.
        arrays: numpy arrays, tensors or nested lists; keys may contain ``/`` for groups.
            ``str`` arrays are stored as UTF-8 strings (read back as ``bytes``).
        compression: h5py filter: ``"gzip"``, ``"lzf"``, a gzip level 0-9, or None.
        chunks: True for sample-oriented chunks (about one sample per chunk: fast random
            sample access, and volumes above 1 MiB split into blocks for patch reads), False
            for contiguous storage, a chunk shape for every array, or ``{key: chunk shape}``.
        swmr: write the newest file format (``libver="latest"``) that SWMR needs, so a
            writer can reopen it with ``h5py.File(path, "a", libver="latest")``, set
            ``swmr_mode = True`` and append while ``H5Dataset(..., swmr=True)`` reads.
        overwrite: replace an existing file (otherwise ``FileExistsError``).
        checksum: store HDF5's fletcher32 checksum with every chunk, so a flipped bit is
            an error naming the file when the chunk is read, not a silently wrong sample
            (chunked numeric datasets; contiguous and string datasets have no filters).

    Returns:
        the path written.

    Example:
        >>> import tempfile, numpy as np
        >>> from deepseek.utils.data import write_h5
        >>> p = write_h5(f"{tempfile.mkdtemp()}/d.h5", {"x": np.ones((4, 3)), "y": [0, 1, 0, 1]})
        >>> p.name
        'd.h5'
    """
    path = Path(path)
    if not isinstance(arrays, Mapping) or not arrays:
        raise ValueError("write_h5 needs a non-empty mapping {key: array}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"write_h5: directory {path.parent} does not exist")
    data = {str(key): _as_array(str(key), value) for key, value in arrays.items()}
    lengths = {key: len(a) for key, a in data.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"write_h5: arrays must have the same length along axis 0 (the sample axis), "
            f"got {lengths}"
        )
    if swmr and (chunks is False or isinstance(chunks, Mapping) and False in chunks.values()):
        raise ValueError("write_h5: swmr=True needs chunked storage; leave chunks=True")

    # h5py cannot report a full disk: the failed write surfaces while the file closes,
    # where the error is lost (and h5py may crash). Check the room first.
    needed = sum(a.nbytes if a.dtype.kind != "U" else a.size * 8 for a in data.values())
    free = shutil.disk_usage(path.parent).free
    if compression is None and needed + (1 << 16) > free:
        raise OSError(
            errno.ENOSPC,
            f"write_h5: not enough space to write {path}: the arrays need about "
            f"{needed / 2**20:.1f} MiB and {path.parent} has {free / 2**20:.1f} MiB free. "
            "Free space or write elsewhere",
        )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with h5py.File(tmp, "w", libver="latest" if swmr else None) as f:
            for key, array in data.items():
                args = _dataset_args(key, array, chunks, compression, swmr)
                if checksum and args["chunks"] is not None and args["dtype"] is None:
                    args["fletcher32"] = True
                f.create_dataset(key, **args)
            f.flush()  # surface write errors here, not in close()
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and _is_disk_full(exc):
            raise OSError(
                getattr(exc, "errno", None) or errno.ENOSPC,
                f"write_h5: cannot write {path}: the device is full or a size limit was "
                f"reached ({exc}). Free space in {path.parent} or write elsewhere",
            ) from None
        raise
    return path


def _is_disk_full(exc: OSError) -> bool:
    # h5py reports the errno only inside its message ("errno = 28").
    codes = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
    text = str(exc)
    return exc.errno in codes or any(f"errno = {c}," in text for c in codes)


def _dataset_args(
    key: str, array: np.ndarray, chunks: Any, compression: str | int | None, swmr: bool
) -> dict[str, Any]:
    dtype = None
    if array.dtype.kind == "U":  # h5py has no fixed-width unicode type
        array, dtype = array.astype(object), h5py.string_dtype()
    if isinstance(chunks, Mapping):
        chunks = chunks.get(key, True)
    if chunks is True or (chunks is False and compression is not None):
        chunks = _default_chunks(array.shape, array.dtype.itemsize)
    elif chunks is False:
        chunks = None
    elif len(chunks) != array.ndim:
        raise ValueError(
            f"write_h5: chunks {tuple(chunks)} has {len(chunks)} axes but array {key!r} has "
            f"shape {array.shape}; pass chunks as {{key: shape}} for arrays of different rank"
        )
    args: dict[str, Any] = {"data": array, "dtype": dtype, "chunks": chunks}
    if compression is not None:
        args["compression"] = compression
    if chunks is not None:  # chunked datasets can grow along the sample axis (appends, SWMR)
        args["maxshape"] = (None, *array.shape[1:])
    return args
