"""``ds.utils.data``: torch.utils.data plus HDF5 datasets."""

from torch.utils.data import *
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset, random_split

from deepseek.utils.data.h5 import H5Dataset, write_h5
