"""Volumetric data: phantoms, label-balanced patch sampling over H5Dataset, NIfTI/DICOM
conversion on the example files nibabel and pydicom ship, and the CLI."""

from __future__ import annotations

import os
import shutil

import h5py
import numpy as np
import pytest
import torch

from deepseek.utils.data import DataLoader, write_h5
from deepseek.vision.data import PatchDataset, make_ct_phantom, write_phantom_h5
from deepseek.vision.transforms import Compose, RandomFlip


def test_phantom_is_reproducible_and_labelled():
    image, label = make_ct_phantom((32, 32, 32), seed=7)
    again, label2 = make_ct_phantom((32, 32, 32), seed=7)
    other, _ = make_ct_phantom((32, 32, 32), seed=8)
    assert torch.equal(image, again) and torch.equal(label, label2)
    assert not torch.equal(image, other)
    assert image.dtype == torch.float32 and label.dtype == torch.uint8
    assert sorted(label.unique().tolist()) == [0, 1, 2]
    # Organs are brighter than the tissue around them; air is air.
    assert image[label == 1].mean() > image[(label == 0) & (image > -500)].mean() + 30
    assert image[0, 0, 0, 0] < -900


@pytest.fixture
def volumes(tmp_path):
    return write_phantom_h5(tmp_path / "ct.h5", n=2, shape=(32, 32, 32), seed=1)


def test_patch_dataset_balances_foreground_and_background(volumes):
    fg_only = PatchDataset(volumes, (8, 8, 8), samples_per_volume=10, pos=1, neg=0, seed=0)
    bg_only = PatchDataset(volumes, (8, 8, 8), samples_per_volume=10, pos=0, neg=1, seed=0)
    assert len(fg_only) == 20
    for i in range(len(fg_only)):
        image, label = fg_only[i]
        assert image.shape == label.shape == (1, 8, 8, 8)
        assert image.dtype == torch.float32 and label.dtype == torch.long
        assert label.any()
        assert not bg_only[i][1].any()
    mixed = PatchDataset(volumes, (8, 8, 8), samples_per_volume=200, pos=1, neg=3, seed=0)
    share = np.mean([bool(mixed[i][1].any()) for i in range(len(mixed))])
    assert 0.15 < share < 0.35  # about 1 in 4


def test_patch_dataset_reads_the_patch_it_reports(tmp_path):
    # Every voxel encodes its own position, so a patch tells where it was cut from.
    z, y, x = np.meshgrid(*[np.arange(s) for s in (24, 32, 20)], indexing="ij")
    code = (z * 10_000 + y * 100 + x).astype(np.float32)
    label = ((z > 12) & (y < 10)).astype(np.uint8)
    path = write_h5(
        tmp_path / "coded.h5",
        {"image": np.stack([code[None], code[None] + 1]), "label": np.stack([label[None]] * 2)},
    )
    data = PatchDataset(path, (8, 16, 8), samples_per_volume=5, seed=3)
    for i in range(len(data)):
        image, lab = data[i]
        start = int(image[0, 0, 0, 0]) - (i // 5)
        z0, y0, x0 = start // 10_000, start // 100 % 100, start % 100
        window = (slice(z0, z0 + 8), slice(y0, y0 + 16), slice(x0, x0 + 8))
        np.testing.assert_array_equal(image[0].numpy(), code[window] + i // 5)
        np.testing.assert_array_equal(lab[0].numpy(), label[window])


def test_patch_dataset_is_reproducible_changes_per_epoch_and_loads_in_workers(volumes):
    data = PatchDataset(
        volumes, (8, 8, 8), samples_per_volume=4, seed=5, transform=Compose([RandomFlip()])
    )
    a = [data[i][0] for i in range(len(data))]
    assert all(torch.equal(x, data[i][0]) for i, x in enumerate(a))
    data.set_epoch(1)
    assert any(not torch.equal(x, data[i][0]) for i, x in enumerate(a))
    images, labels = next(iter(DataLoader(data, batch_size=4, num_workers=2)))
    assert images.shape == (4, 1, 8, 8, 8) and labels.shape == (4, 1, 8, 8, 8)


def test_patch_dataset_rejects_bad_data(tmp_path, volumes):
    with pytest.raises(ValueError, match="larger than the sample size"):
        PatchDataset(volumes, (40, 8, 8))
    with pytest.raises(ValueError, match=r"label values in \[0, 2\] are outside \[0, 2\)"):
        PatchDataset(volumes, (8, 8, 8), num_classes=2)
    image = np.zeros((1, 1, 8, 8, 8), np.float32)
    image[0, 0, 2, 2, 2] = np.nan
    bad = write_h5(
        tmp_path / "nan.h5", {"image": image, "label": np.zeros((1, 1, 8, 8, 8), np.uint8)}
    )
    with pytest.raises(ValueError, match="non-finite"):
        PatchDataset(bad, (8, 8, 8))[0]
    mismatched = write_h5(
        tmp_path / "mis.h5",
        {
            "image": np.zeros((1, 1, 8, 8, 8), np.float32),
            "label": np.zeros((1, 1, 8, 8, 6), np.uint8),
        },
    )
    with pytest.raises(ValueError, match="share their last 3 sizes"):
        PatchDataset(mismatched, (4, 4, 4))


# -- NIfTI / DICOM ---------------------------------------------------------------------------

nibabel = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")
from nibabel.testing import data_path as NIB_DATA  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402

from deepseek.vision.data.convert import convert_to_h5, read_dicom_series  # noqa: E402


def test_convert_nifti_keeps_values_in_zyx_order(tmp_path):
    source = os.path.join(NIB_DATA, "anatomical.nii")
    nifti = nibabel.load(source)
    expected = np.asarray(nifti.dataobj, dtype=np.float32)
    mask = (expected > np.median(expected)).astype(np.uint8)
    nibabel.save(nibabel.Nifti1Image(mask, nifti.affine), tmp_path / "mask.nii.gz")
    with pytest.raises(ValueError, match=r"integer classes in \[0, 255\]"):
        convert_to_h5(source, tmp_path / "bad.h5", label=source)
    out = convert_to_h5(source, tmp_path / "a.h5", label=tmp_path / "mask.nii.gz")
    with h5py.File(out) as f:
        image = f["image"][:]
        assert image.shape == (1, 1, *expected.shape[::-1])
        np.testing.assert_array_equal(image[0, 0], expected.transpose(2, 1, 0))
        np.testing.assert_allclose(f["spacing"][0], [2.0, 2.0, 2.0])
        assert f["label"].dtype == np.uint8
        np.testing.assert_array_equal(f["label"][0, 0], mask.transpose(2, 1, 0))
    four_d = convert_to_h5(os.path.join(NIB_DATA, "example4d.nii.gz"), tmp_path / "b.h5")
    with h5py.File(four_d) as f:
        assert f["image"].shape == (1, 2, 24, 96, 128)  # time points become channels


def test_convert_dicom_series_sorts_slices_and_applies_rescale(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    # nibabel ships two slices of one MR series; copy them in reverse name order.
    shutil.copy(os.path.join(NIB_DATA, "1.dcm"), series / "a.dcm")
    shutil.copy(os.path.join(NIB_DATA, "0.dcm"), series / "b.dcm")
    volume, spacing = read_dicom_series(series)
    first = pydicom.dcmread(os.path.join(NIB_DATA, "0.dcm"))
    assert volume.shape == (1, 2, 256, 256)
    np.testing.assert_array_equal(volume[0, 0], first.pixel_array.astype(np.float32))
    assert spacing == pytest.approx((3.0, 1.796875, 1.796875), rel=1e-4)
    ct = get_testdata_file("CT_small.dcm")
    out = convert_to_h5(ct, tmp_path / "ct.h5")
    raw = pydicom.dcmread(ct)
    with h5py.File(out) as f:
        np.testing.assert_array_equal(
            f["image"][0, 0, 0],
            raw.pixel_array * float(raw.RescaleSlope) + float(raw.RescaleIntercept),
        )


def test_convert_cli(tmp_path, capsys):
    from deepseek.cli import main

    out_dir = tmp_path / "h5"
    source = os.path.join(NIB_DATA, "anatomical.nii")
    assert main(["vision", "convert", source, "-o", str(out_dir)]) == 0
    assert (out_dir / "anatomical.h5").exists()
    assert main(["vision", "convert", str(tmp_path / "missing.nii"), "-o", str(out_dir)]) == 1
    assert "missing.nii does not exist" in capsys.readouterr().err
    assert main(["vision", "convert", source, "-o", str(out_dir), "--labels", "a", "b"]) == 2
    assert "1 inputs but 2 labels" in capsys.readouterr().err
