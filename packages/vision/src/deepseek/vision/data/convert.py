"""NIfTI (nibabel) and DICOM series (pydicom) -> the HDF5 layout ``H5Dataset`` reads.

One output file per volume: ``image`` ``(1, C, D, H, W)`` float32 (DICOM in Hounsfield
units / rescaled values; a 4-D NIfTI's last axis becomes the channels), optional ``label``
``(1, 1, D, H, W)`` uint8, and ``spacing`` ``(1, 3)`` in mm along (D, H, W). NIfTI arrays
are stored in (z, y, x) order so that axis order matches DICOM stacks. Both readers are
optional dependencies: ``pip install deepseek-vision[nifti]`` / ``[dicom]``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["convert_to_h5", "read_dicom_series", "read_nifti", "read_volume"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _need(module: str, extra: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(
            f"reading this format needs {module}: pip install 'deepseek-vision[{extra}]'"
        ) from e


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float, float]]:
    """``(array (C, D, H, W) float32, spacing (D, H, W))`` from a .nii / .nii.gz file."""
    nib = _need("nibabel", "nifti")
    image = nib.load(str(path))
    data = np.asarray(image.dataobj, dtype=np.float32)
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4:
        raise ValueError(f"{path}: expected a 3-D or 4-D NIfTI image, got shape {data.shape}")
    # (x, y, z, c) -> (c, z, y, x)
    return np.ascontiguousarray(data.transpose(3, 2, 1, 0)), (zooms[2], zooms[1], zooms[0])


def read_dicom_series(
    files: Sequence[str | os.PathLike] | str | os.PathLike,
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """``(array (1, D, H, W) float32, spacing)`` from the slices of one DICOM series (a
    directory or a list of files): slices sorted along the slice normal (by
    ImagePositionPatient, else InstanceNumber), RescaleSlope/Intercept applied (HU for CT)."""
    pydicom = _need("pydicom", "dicom")
    if isinstance(files, (str, os.PathLike)):
        p = Path(files)
        files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    slices = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f))
        except Exception as e:  # pydicom raises InvalidDicomError and friends
            raise ValueError(f"{f} is not a readable DICOM file: {e}") from e
        if "PixelData" not in ds:
            continue
        slices.append(ds)
    if not slices:
        raise ValueError(f"no DICOM image slices found in {list(map(str, files))}")
    series = {str(s.get("SeriesInstanceUID", "")) for s in slices}
    if len(series) > 1:
        raise ValueError(f"the files hold {len(series)} DICOM series; convert one series at a time")
    first = slices[0]
    if "ImageOrientationPatient" in first and "ImagePositionPatient" in first:
        o = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
        normal = np.cross(o[:3], o[3:])
        key = lambda s: float(np.dot(normal, np.asarray(s.ImagePositionPatient, dtype=np.float64)))  # noqa: E731
    else:
        key = lambda s: float(s.get("InstanceNumber", 0))  # noqa: E731
    slices.sort(key=key)
    shapes = {s.pixel_array.shape for s in slices}
    if len(shapes) > 1:
        raise ValueError(f"DICOM slices have different shapes {sorted(shapes)}")
    volume = np.stack(
        [
            s.pixel_array.astype(np.float32) * float(s.get("RescaleSlope", 1.0))
            + float(s.get("RescaleIntercept", 0.0))
            for s in slices
        ]
    )
    if len(slices) > 1:
        dz = abs(key(slices[1]) - key(slices[0])) or float(first.get("SliceThickness", 1.0))
    else:
        dz = float(first.get("SliceThickness", 1.0))
    dy, dx = (float(v) for v in first.get("PixelSpacing", (1.0, 1.0)))
    return volume[None], (dz, dy, dx)


def read_volume(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float, float]]:
    """NIfTI file, DICOM file or directory of one DICOM series -> ``(C, D, H, W)``, spacing."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    if p.name.endswith(NIFTI_SUFFIXES):
        return read_nifti(p)
    return read_dicom_series(p)


def convert_to_h5(
    image: str | os.PathLike,
    output: str | os.PathLike,
    label: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert one volume (and its label volume) to ``output`` (.h5).

    >>> import os, tempfile
    >>> from nibabel.testing import data_path
    >>> out = convert_to_h5(os.path.join(data_path, "anatomical.nii"), f"{tempfile.mkdtemp()}/a.h5")
    >>> import h5py; h5py.File(out)["image"].shape
    (1, 1, 25, 41, 33)
    """
    from deepseek.utils.data import write_h5

    array, spacing = read_volume(image)
    if not np.isfinite(array).all():
        raise ValueError(f"{image}: the volume holds NaN or inf values")
    arrays = {
        "image": array[None].astype(np.float32),
        "spacing": np.asarray([spacing], dtype=np.float32),
    }
    if label is not None:
        lab, _ = read_volume(label)
        if lab.shape[1:] != array.shape[1:]:
            raise ValueError(
                f"label {label} has spatial shape {lab.shape[1:]} but image {image} has "
                f"{array.shape[1:]}"
            )
        if lab.min() < 0 or lab.max() > 255 or not np.array_equal(lab, np.round(lab)):
            raise ValueError(f"label {label} must hold integer classes in [0, 255]")
        arrays["label"] = lab[:1][None].astype(np.uint8)
    return write_h5(output, arrays, overwrite=overwrite)
