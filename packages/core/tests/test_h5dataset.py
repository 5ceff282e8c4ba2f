"""Tests for ``deepseek.utils.data.H5Dataset`` and ``write_h5`` (real HDF5 files, real workers)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch

from deepseek.utils.data import DataLoader, H5Dataset, write_h5
from deepseek.utils.data.h5 import H5KeyError


def _images(n: int, offset: int = 0) -> np.ndarray:
    # Every value encodes its sample number, so a wrong sample can never match by chance.
    base = np.arange(n * 16, dtype=np.float32).reshape(n, 1, 4, 4)
    return base + 1000 * offset


@pytest.fixture
def three_files(tmp_path):
    """Files with 3, 0 and 4 samples; global sample ``g`` has label ``g``."""
    paths, start = [], 0
    for name, n in [("a.h5", 3), ("empty.h5", 0), ("b.h5", 4)]:
        labels = np.arange(start, start + n)
        paths.append(write_h5(tmp_path / name, {"image": _images(n, start), "label": labels}))
        start += n
    return paths


def _expected(g: int) -> tuple[np.ndarray, int]:
    """Image and label of global sample ``g`` in ``three_files``."""
    offset, local = (0, g) if g < 3 else (3, g - 3)
    return _images(local + 1, offset)[local], g


def test_single_file_tuple_samples(tmp_path):
    path = write_h5(tmp_path / "d.h5", {"image": _images(5), "label": np.arange(5) * 10})
    ds = H5Dataset(path)
    assert len(ds) == 5
    image, label = ds[2]
    assert isinstance(image, torch.Tensor) and image.dtype == torch.float32
    torch.testing.assert_close(image, torch.from_numpy(_images(5)[2]))
    assert label.ndim == 0 and int(label) == 20
    assert int(ds[-1][1]) == 40


def test_multi_file_index_crosses_file_boundaries(three_files):
    ds = H5Dataset(three_files)
    assert len(ds) == 7
    for g in range(7):
        image, label = ds[g]
        want_image, want_label = _expected(g)
        np.testing.assert_array_equal(image.numpy(), want_image)
        assert int(label) == want_label
    assert ds.locate(2) == (three_files[0], 2, None)
    assert ds.locate(3) == (three_files[2], 0, None)
    assert ds.locate(-1) == (three_files[2], 3, None)
    with pytest.raises(IndexError, match="out of range"):
        ds[7]
    with pytest.raises(IndexError, match="out of range"):
        ds[-8]


def test_dict_samples_numpy_output_and_transform(three_files):
    ds = H5Dataset(three_files, keys=["label", "image"], as_dict=True, to_tensor=False)
    sample = ds[4]
    assert list(sample) == ["label", "image"]
    assert isinstance(sample["image"], np.ndarray) and int(sample["label"]) == 4

    def double(sample):
        image, label = sample
        return image * 2, label + 100

    ds = H5Dataset(three_files, transform=double)
    image, label = ds[5]
    np.testing.assert_array_equal(image.numpy(), 2 * _expected(5)[0])
    assert int(label) == 105
    assert [int(lbl) for _, lbl in ds.__getitems__([0, 6])] == [100, 106]


def test_single_key_and_nested_key(tmp_path):
    path = write_h5(tmp_path / "g.h5", {"data/x": np.arange(6).reshape(3, 2), "y": [1, 2, 3]})
    ds = H5Dataset(path, keys="data/x")
    (x,) = ds[1]
    assert x.tolist() == [2, 3]


def test_batched_read_matches_single_reads(three_files):
    ds = H5Dataset(three_files)
    # Runs, gaps, duplicates, negative indices and both files in one batch.
    indices = [6, 0, 1, 2, 4, 4, -7, 3, 5]
    batch = ds.__getitems__(indices)
    assert len(batch) == len(indices)
    for i, (image, label) in zip(indices, batch):
        want_image, want_label = ds[i]
        torch.testing.assert_close(image, want_image)
        assert label.shape == want_label.shape and int(label) == int(want_label)
    with pytest.raises(IndexError):
        ds.__getitems__([0, 7])


def test_batched_duplicates_do_not_share_memory(three_files):
    ds = H5Dataset(three_files)
    (first, _), (second, _), (third, _) = ds.__getitems__([4, 4, 5])
    first += 1  # an in-place transform on one copy must not change the others
    np.testing.assert_array_equal(second.numpy(), _expected(4)[0])
    np.testing.assert_array_equal(third.numpy(), _expected(5)[0])


def _load_all(ds, **kwargs):
    batches = list(DataLoader(ds, batch_size=2, **kwargs))
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    return images, labels


def test_dataloader_two_fork_workers_match_single_process(three_files):
    ds = H5Dataset(three_files)
    ds[0]  # the parent now holds open handles; forked workers must not reuse them
    images0, labels0 = _load_all(ds, num_workers=0)
    images2, labels2 = _load_all(ds, num_workers=2, multiprocessing_context="fork")
    assert labels0.tolist() == list(range(7))
    assert sorted(labels2.tolist()) == labels0.tolist()
    order = torch.argsort(labels2)
    torch.testing.assert_close(images2[order], images0)
    ds[6]  # the parent's handles still work after the workers exited


class _HandleProbe(torch.utils.data.Dataset):
    """Reports which HDF5 file handle served each item, from inside the worker."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        self.ds[i]
        return os.getpid(), self.ds._handles[0][0].id.id


def test_forked_workers_open_their_own_handles(three_files):
    ds = H5Dataset(three_files)
    ds[0]
    parent_handle = ds._handles[0][0].id.id
    loader = DataLoader(
        _HandleProbe(ds), batch_size=None, num_workers=2, multiprocessing_context="fork"
    )
    seen = {(int(pid), int(hid)) for pid, hid in loader}
    assert len({pid for pid, _ in seen}) == 2 and os.getpid() not in {pid for pid, _ in seen}
    assert parent_handle not in {hid for _, hid in seen}


def test_dataloader_spawn_workers_pickle_the_dataset(three_files):
    ds = H5Dataset(three_files)
    ds[0]
    _, labels = _load_all(ds, num_workers=2, multiprocessing_context="spawn", shuffle=True)
    assert sorted(labels.tolist()) == list(range(7))


def test_pickle_after_use_and_close(three_files):
    ds = H5Dataset(three_files, as_dict=True)
    first = ds[4]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._handles == {}  # handles are never pickled
    torch.testing.assert_close(clone[4], first)
    ds.close()
    torch.testing.assert_close(ds[4], first)  # reopens lazily
    with H5Dataset(three_files) as ctx:
        ctx[0]
    assert ctx._handles == {}


@pytest.fixture
def volumes(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.standard_normal((2, 2, 10, 9, 8)).astype(np.float32)  # (N, C, D, H, W)
    mask = rng.integers(0, 3, (2, 10, 9, 8)).astype(np.uint8)  # (N, D, H, W)
    label = np.array([7, 9])
    path = write_h5(tmp_path / "vol.h5", {"image": image, "mask": mask, "label": label})
    return path, image, mask, label


def _grid(size, patch, stride):
    starts = list(range(0, size - patch + 1, stride))
    return starts if starts[-1] + patch == size else [*starts, size - patch]


@pytest.mark.parametrize("stride", [None, 2, (3, 5, 4)])
def test_patches_equal_numpy_slicing(volumes, stride):
    path, image, mask, label = volumes
    patch = (4, 4, 4)
    ds = H5Dataset(path, ["image", "mask", "label"], patch_size=patch, patch_stride=stride)
    steps = patch if stride is None else (stride,) * 3 if isinstance(stride, int) else stride
    origins = [
        (d, h, w)
        for d in _grid(10, 4, steps[0])
        for h in _grid(9, 4, steps[1])
        for w in _grid(8, 4, steps[2])
    ]
    assert len(ds) == 2 * len(origins)
    seen = np.zeros((2, 10, 9, 8), dtype=bool)
    for i in range(len(ds)):
        sample, (d, h, w) = i // len(origins), origins[i % len(origins)]
        got_image, got_mask, got_label = ds[i]
        window = (slice(d, d + 4), slice(h, h + 4), slice(w, w + 4))
        np.testing.assert_array_equal(got_image.numpy(), image[sample][(slice(None), *window)])
        np.testing.assert_array_equal(got_mask.numpy(), mask[sample][window])
        assert int(got_label) == label[sample]  # scalar label repeated for every patch
        assert ds.locate(i) == (path, sample, (d, h, w))
        seen[sample][window] = True
    # Strides up to the patch size cover every voxel (the clamped last patches reach the
    # border); a larger stride (5 on the 9-voxel axis) skips voxel 4 between patches.
    assert seen.all() == all(step <= 4 for step in steps)


def test_default_stride_is_non_overlapping_with_clamped_edges(volumes):
    path, *_ = volumes
    ds = H5Dataset(path, ["mask"], patch_size=(4, 4, 4))
    starts = {ds.locate(i)[2] for i in range(len(ds))}
    assert {s[0] for s in starts} == {0, 4, 6}  # 10 = 4 + 4 + (clamped: 6..10)
    assert {s[1] for s in starts} == {0, 4, 5}
    assert {s[2] for s in starts} == {0, 4}  # 8 divides evenly: no extra patch


def test_2d_patches_and_patches_through_dataloader(tmp_path):
    image = np.arange(3 * 6 * 6, dtype=np.float32).reshape(3, 6, 6)
    path = write_h5(tmp_path / "img.h5", {"image": image, "label": [0, 1, 2]})
    ds = H5Dataset(path, patch_size=(3, 3), patch_stride=3)
    batches = list(DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context="fork"))
    patches = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    assert patches.shape == (12, 3, 3) and labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    want = image.reshape(3, 2, 3, 2, 3).transpose(0, 1, 3, 2, 4).reshape(12, 3, 3)
    np.testing.assert_array_equal(patches.numpy(), want)


def _corrupt_chunks(path, key, keep):
    """Overwrite every compressed chunk of ``key`` except the one at offset ``keep``."""
    with h5py.File(path, "r") as f:
        dsid = f[key].id
        chunks = [dsid.get_chunk_info(i) for i in range(dsid.get_num_chunks())]
    bad = [c for c in chunks if tuple(c.chunk_offset) != keep]
    assert len(bad) == len(chunks) - 1
    with open(path, "r+b") as raw:
        for chunk in bad:
            raw.seek(chunk.byte_offset)
            raw.write(b"\xff" * chunk.size)  # not a valid zlib stream: decoding it fails


def test_patch_read_touches_only_its_chunks(tmp_path):
    volume = np.arange(2 * 16 * 16 * 16, dtype=np.float32).reshape(2, 16, 16, 16)
    path = write_h5(tmp_path / "big.h5", {"image": volume}, compression="gzip", chunks=(1, 8, 8, 8))
    _corrupt_chunks(path, "image", keep=(0, 8, 0, 8))
    with h5py.File(path, "r") as f, pytest.raises(OSError):
        f["image"][0]  # reading the whole volume hits a corrupted chunk
    ds = H5Dataset(path, ["image"], patch_size=(8, 8, 8))
    index = next(i for i in range(len(ds)) if ds.locate(i)[1:] == (0, (8, 0, 8)))
    (patch,) = ds[index]  # succeeds: only the one intact chunk was read and decompressed
    np.testing.assert_array_equal(patch.numpy(), volume[0, 8:16, 0:8, 8:16])
    with pytest.raises(OSError):
        ds[index + 1]


_SWMR_WRITER = textwrap.dedent(
    """
    import sys, h5py, numpy as np
    with h5py.File(sys.argv[1], "a", libver="latest") as f:
        f.swmr_mode = True
        print("ready", flush=True)
        sys.stdin.readline()
        for key in ("image", "label"):
            dset = f[key]
            dset.resize(6, axis=0)
            dset[4:] = np.full((2, *dset.shape[1:]), 5, dtype=dset.dtype)
            dset.flush()
        print("appended", flush=True)
        sys.stdin.readline()
    """
)


def test_swmr_read_while_writer_appends(tmp_path):
    path = write_h5(tmp_path / "live.h5", {"image": _images(4), "label": np.arange(4)}, swmr=True)
    writer = subprocess.Popen(
        [sys.executable, "-c", _SWMR_WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        with pytest.raises(OSError, match=r"live\.h5.*swmr=True"):
            H5Dataset(path)  # a plain reader is locked out while the writer holds the file
        ds = H5Dataset(path, swmr=True)
        assert len(ds) == 4 and int(ds[3][1]) == 3
        writer.stdin.write("append\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "appended"
        assert len(ds) == 4  # the length is a snapshot until refresh()
        ds.refresh()
        assert len(ds) == 6
        image, label = ds[5]
        assert int(label) == 5 and bool((image == 5).all())
        np.testing.assert_array_equal(ds[1][0].numpy(), _images(4)[1])
        ds.close()
    finally:
        writer.stdin.write("close\n")
        writer.stdin.flush()
        assert writer.wait(timeout=20) == 0


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        H5Dataset(tmp_path / "nope.h5")


def test_not_hdf5_file(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("just text")
    with pytest.raises(ValueError, match=r"notes\.h5 is not an HDF5 file"):
        H5Dataset(path)
    with pytest.raises(IsADirectoryError, match="directory"):
        H5Dataset(tmp_path)


def test_missing_key_lists_available_keys(three_files):
    with pytest.raises(H5KeyError) as info:
        H5Dataset(three_files, keys=["image", "target"])
    message = str(info.value)
    assert isinstance(info.value, KeyError)
    assert "'target'" in message and "a.h5" in message
    assert "['image', 'label']" in message


def test_group_and_scalar_keys_are_rejected(tmp_path):
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as f:
        f["grp/x"] = np.zeros(3)
        f["scalar"] = 1.0
    with pytest.raises(H5KeyError, match="'grp' is a group"):
        H5Dataset(path, keys=["grp"])
    with pytest.raises(ValueError, match="'scalar' is a scalar"):
        H5Dataset(path, keys=["scalar"])


def test_mismatched_lengths_in_one_file(tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f["image"] = np.zeros((5, 2))
        f["label"] = np.zeros(4)
    with pytest.raises(ValueError, match=r"bad\.h5.*'image': 5, 'label': 4"):
        H5Dataset(path)


def test_file_removed_after_construction(three_files):
    ds = H5Dataset(three_files)
    three_files[2].unlink()
    ds[0]
    with pytest.raises(FileNotFoundError, match=r"b\.h5"):
        ds[4]


def test_bad_arguments(three_files, volumes):
    with pytest.raises(ValueError, match="at least one"):
        H5Dataset([])
    with pytest.raises(ValueError, match="unique"):
        H5Dataset(three_files, keys=["image", "image"])
    with pytest.raises(TypeError, match="callable"):
        H5Dataset(three_files, transform="flip")
    with pytest.raises(TypeError, match="patch_size"):
        H5Dataset(three_files, patch_size=4)
    with pytest.raises(ValueError, match="same length"):
        H5Dataset(three_files, patch_size=(2, 2), patch_stride=(1, 1, 1))
    with pytest.raises(ValueError, match="patch_stride needs patch_size"):
        H5Dataset(three_files, patch_stride=2)
    path = volumes[0]
    with pytest.raises(ValueError, match="larger than the sample"):
        H5Dataset(path, ["mask"], patch_size=(4, 4, 12))
    with pytest.raises(ValueError, match="no key has 3 axes"):
        H5Dataset(path, ["label"], patch_size=(4, 4, 4))


def test_patch_keys_with_different_spatial_shapes(tmp_path):
    path = write_h5(tmp_path / "m.h5", {"image": np.zeros((2, 8, 8)), "mask": np.zeros((2, 4, 4))})
    with pytest.raises(ValueError, match="share their last 2 sizes"):
        H5Dataset(path, ["image", "mask"], patch_size=(4, 4))


def test_write_h5_refuses_overwrite(tmp_path):
    path = write_h5(tmp_path / "d.h5", {"x": np.zeros(3)})
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_h5(path, {"x": np.ones(3)})
    write_h5(path, {"x": np.ones(3)}, overwrite=True)
    with h5py.File(path, "r") as f:
        assert f["x"][:].tolist() == [1.0, 1.0, 1.0]


def test_write_h5_checks_arrays_and_leaves_no_temp_file(tmp_path):
    with pytest.raises(ValueError, match=r"same length.*'x': 3, 'y': 2"):
        write_h5(tmp_path / "d.h5", {"x": np.zeros(3), "y": np.zeros(2)})
    with pytest.raises(ValueError, match="scalar"):
        write_h5(tmp_path / "d.h5", {"x": 1.0})
    with pytest.raises(ValueError, match="non-empty"):
        write_h5(tmp_path / "d.h5", {})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_h5(tmp_path / "no" / "d.h5", {"x": [1]})
    # This one fails while writing: the temporary file must be cleaned up.
    with pytest.raises(ValueError, match="chunks"):
        write_h5(tmp_path / "d.h5", {"x": np.zeros((3, 4)), "y": np.zeros(3)}, chunks=(1, 4))
    assert list(tmp_path.iterdir()) == []


def test_write_h5_round_trip_options(tmp_path):
    image = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    path = write_h5(
        tmp_path / "o.h5",
        {"image": image, "name": np.array(["cat", "dog"])},
        compression="gzip",
        chunks={"image": (1, 3, 4)},
    )
    with h5py.File(path, "r") as f:
        assert f["image"].chunks == (1, 3, 4) and f["image"].compression == "gzip"
        assert f["image"].maxshape == (None, 3, 4)  # appendable along the sample axis
    got_image, name = H5Dataset(path, ["image", "name"])[1]
    torch.testing.assert_close(got_image, image[1])
    assert name == b"dog"  # strings come back as bytes, untouched by to_tensor
    contiguous = write_h5(tmp_path / "c.h5", {"x": np.zeros((4, 2))}, chunks=False)
    with h5py.File(contiguous, "r") as f:
        assert f["x"].chunks is None
