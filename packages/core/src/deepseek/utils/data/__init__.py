"""``ds.utils.data``: torch.utils.data plus HDF5 datasets."""

from torch.utils.data import *  # noqa: F403
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset, random_split  # noqa: F401

from deepseek.utils.data.h5 import H5Dataset, write_h5  # noqa: F401
