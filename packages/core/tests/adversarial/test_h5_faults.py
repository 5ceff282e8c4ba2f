"""HDF5 faults (issue 12, items 5 and 10): bit flips caught by the fletcher32 checksum
that write_h5 stores by default, a truncated file called truncated (not "another process
may be writing it"), and a full disk named before h5py can lose the error."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from deepseek.utils.data import H5Dataset, write_h5


def _write(path: Path, checksum: bool = True) -> Path:
    x = np.arange(64 * 32, dtype=np.float32).reshape(64, 32)
    return write_h5(path, {"x": x, "y": np.arange(64)}, chunks=True, checksum=checksum)


def _flip_in_chunk(path: Path, sample: int) -> None:
    with h5py.File(path) as f:
        offset = f["x"].id.get_chunk_info_by_coord((sample, 0)).byte_offset
    data = bytearray(path.read_bytes())
    data[offset + sample * 32 * 4 + 8] ^= 0x01  # chunks hold whole rows of 32 float32
    path.write_bytes(bytes(data))


def test_write_h5_stores_fletcher32_by_default(tmp_path: Path) -> None:
    with h5py.File(_write(tmp_path / "a.h5")) as f:
        assert f["x"].fletcher32 and f["y"].fletcher32
    with h5py.File(_write(tmp_path / "b.h5", checksum=False)) as f:
        assert not f["x"].fletcher32


def test_bit_flip_is_an_error_naming_file_and_sample(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.h5")
    _flip_in_chunk(path, 10)
    data = H5Dataset(path, keys=["x", "y"])
    with pytest.raises(OSError, match=rf"sample 10 from HDF5 file {path}.*damaged"):
        data[10]
    with pytest.raises(OSError, match=rf"samples 9..11 from HDF5 file {path}"):
        data.__getitems__([11, 9, 10])


def test_without_checksum_the_same_flip_is_silent(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.h5", checksum=False)
    clean = H5Dataset(path, keys=["x"])[10][0].clone()
    _flip_in_chunk(path, 10)
    assert not np.array_equal(H5Dataset(path, keys=["x"])[10][0].numpy(), clean.numpy())


def test_truncated_file_is_called_truncated(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.h5")
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(OSError, match=r"truncated") as info:
        H5Dataset(path)
    assert "another process" not in str(info.value)
    assert str(path) in str(info.value)


def test_full_disk_names_the_file(tiny_disk: Path) -> None:
    target = tiny_disk / "big.h5"
    with pytest.raises(OSError, match=rf"not enough space to write {target}"):
        write_h5(target, {"x": np.ones((1000, 200))})
    assert list(tiny_disk.iterdir()) == []
