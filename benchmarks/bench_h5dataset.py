"""H5Dataset vs the naive "open the file in every __getitem__" dataset: samples/s.

Data: N samples of a 1x64x64 float32 image + an int64 label in one HDF5 file written by
``write_h5`` (one sample per chunk; uncompressed by default, ``--compression gzip`` to
compress). Both loaders read the same file through a ``DataLoader`` (batch 64) with 0, 1 and
2 workers; the ratio compares loaders with the same workers. Rows:

- ``naive``: opens ``h5py.File`` in every ``__getitem__`` (the reference).
- ``H5Dataset per-item``: cached per-process handles, one ``__getitem__`` per sample.
- ``H5Dataset``: the same plus batched fetches (``__getitems__``; consecutive indices are one
  read, which only helps in sequential order).
- ``in-memory tensors``: a ``TensorDataset`` of the same data, no file at all: the ceiling set
  by the ``DataLoader`` itself (collation, and with workers the inter-process transfer).

Each figure is the best of ``--repeats`` epochs after one warm-up epoch, with persistent
workers (as in training, worker start-up is paid once); the file is in the OS page cache,
so this measures the software overhead of reading, not the disk.

    python benchmarks/bench_h5dataset.py [--quick] [--samples N] [--compression gzip]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from deepseek.utils.data import H5Dataset, write_h5


class NaiveH5Dataset(Dataset):
    """The common pattern: open the file, read one sample, close it, for every item."""

    def __init__(self, path: Path, length: int) -> None:
        self.path, self.length = path, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        with h5py.File(self.path, "r") as f:
            return torch.from_numpy(f["image"][i]), torch.as_tensor(f["label"][i])


class PerItem(Dataset):
    """H5Dataset without batched fetches: DataLoader calls ``__getitem__`` once per sample."""

    def __init__(self, ds: H5Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        return self.ds[i]


def epoch_rate(dataset: Dataset, workers: int, shuffle: bool, repeats: int) -> float:
    """Samples/s of the best of ``repeats`` epochs after a warm-up epoch (workers persist)."""
    loader = DataLoader(
        dataset,
        batch_size=64,
        shuffle=shuffle,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )
    best = float("inf")
    for epoch in range(repeats + 1):
        start = time.perf_counter()
        n = sum(len(labels) for _, labels in loader)
        if epoch > 0:  # epoch 0 starts the workers and opens the files
            best = min(best, time.perf_counter() - start)
    assert n == len(dataset)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1000 samples, 1 repeat")
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compression", default=None, help="h5py filter, e.g. gzip")
    args = parser.parse_args()
    n, repeats = (1000, 1) if args.quick else (args.samples, args.repeats)
    torch.set_num_threads(1)

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_h5(
            Path(tmp) / "bench.h5",
            {
                "image": rng.standard_normal((n, 1, 64, 64), dtype=np.float32),
                "label": rng.integers(0, 10, n),
            },
            compression=args.compression,
        )
        h5 = H5Dataset(path)
        with h5py.File(path, "r") as f:
            chunks, comp = f["image"].chunks, f["image"].compression
            image, label = torch.from_numpy(f["image"][:]), torch.from_numpy(f["label"][:])
        in_memory = TensorDataset(image, label)
        loaders = {
            "naive": NaiveH5Dataset(path, n),
            "H5Dataset per-item": PerItem(h5),
            "H5Dataset": h5,
            "in-memory tensors (ceiling)": in_memory,
        }
        print(f"{n} samples, image 1x64x64 float32 + int64 label, batch 64, torch threads 1")
        print(
            f"storage: chunks {chunks}, compression {comp}; "
            f"best of {repeats} epoch(s) after a warm-up\n"
        )
        print("| order | loader | workers | samples/s | ratio vs naive (same workers) |")
        print("|---|---|---|---:|---:|")
        for shuffle in (True, False):
            for workers in (0, 1, 2):
                rates = {
                    name: epoch_rate(ds, workers, shuffle, repeats) for name, ds in loaders.items()
                }
                for name, rate in rates.items():
                    order = "shuffled" if shuffle else "sequential"
                    ratio = rate / rates["naive"]
                    print(f"| {order} | {name} | {workers} | {rate:,.0f} | {ratio:.1f}x |")
        h5.close()


if __name__ == "__main__":
    main()
