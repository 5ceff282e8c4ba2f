"""Volumetric data: synthetic CT phantoms, label-balanced patch sampling over HDF5, and
conversion of NIfTI / DICOM into the HDF5 layout."""

from deepseek.vision.data.patch_dataset import PatchDataset
from deepseek.vision.data.phantom import ORGANS, make_ct_phantom, write_phantom_h5

__all__ = ["ORGANS", "PatchDataset", "make_ct_phantom", "write_phantom_h5"]
