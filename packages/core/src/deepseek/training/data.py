"""Reproducible, resumable data order for the Trainer.

The Trainer owns the sampling order so that a run killed mid-epoch resumes on exactly
the next batch: the order of epoch ``e`` is a permutation drawn from ``seed + e`` (the
global RNG is never touched), and ``start_at`` skips the samples already consumed
without loading them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler


class EpochSampler(Sampler[int]):
    """Shuffles (or not) with a per-epoch seed and shards across ``num_replicas``.

    Like ``DistributedSampler``, but resumable: ``set_epoch(e)`` then
    ``start_at(n)`` makes the next iteration skip this replica's first ``n`` indices.
    """

    def __init__(
        self,
        length: int,
        *,
        shuffle: bool,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.epoch = 0
        self._start = 0
        self.configure(num_replicas=num_replicas, rank=rank, drop_last=drop_last)

    def configure(
        self,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int | None = None,
        shuffle: bool | None = None,
        drop_last: bool | None = None,
    ) -> None:
        """Change the sharding/seed/shuffling (strategies call this on a user's sampler)."""
        if num_replicas is not None:
            self.num_replicas = num_replicas
        if rank is not None:
            self.rank = rank
        if seed is not None:
            self.seed = seed
        if shuffle is not None:
            self.shuffle = shuffle
        if drop_last is not None:
            self.drop_last = drop_last
        if self.drop_last:
            self.per_replica = self.length // self.num_replicas
        else:
            self.per_replica = math.ceil(self.length / self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def start_at(self, index: int) -> None:
        """Skip this replica's first ``index`` samples on the next iteration only."""
        self._start = index

    def indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        total = self.per_replica * self.num_replicas
        if total > len(order):  # pad by wrapping so every replica gets as many samples
            order += order[: total - len(order)]
        return order[:total][self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        start, self._start = self._start, 0
        return iter(self.indices()[start:])

    def __len__(self) -> int:
        return self.per_replica


def rebuild_dataloader(loader: DataLoader, sampler: Sampler) -> DataLoader:
    """The same DataLoader (dataset, batch size, workers, collate, ...) with ``sampler``."""
    if isinstance(loader.dataset, IterableDataset):
        raise TypeError(
            "the Trainer needs a map-style Dataset (with __len__ and __getitem__) to "
            "control the data order for exact resume; got an IterableDataset"
        )
    if loader.batch_size is None:
        raise ValueError(
            "the DataLoader has batch_size=None (a custom batch_sampler); pass a "
            "DataLoader with batch_size=N so the Trainer can resume it exactly"
        )
    kwargs: dict[str, Any] = {
        "batch_size": loader.batch_size,
        "drop_last": loader.drop_last,
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
        "generator": loader.generator,
        "persistent_workers": loader.persistent_workers,
    }
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    return DataLoader(loader.dataset, sampler=sampler, **kwargs)


def as_dataloader(data: Any, batch_size: int | None, *, what: str) -> DataLoader | None:
    """Accept a DataLoader, or a Dataset plus ``batch_size``; None stays None."""
    if data is None:
        return None
    dataset = data.dataset if isinstance(data, DataLoader) else data
    if isinstance(dataset, IterableDataset):
        raise TypeError(
            f"{what} is an IterableDataset ({type(dataset).__name__}); the Trainer needs a "
            "map-style Dataset (with __len__ and __getitem__) to shuffle, count batches and "
            "resume exactly: load the samples into a list/TensorDataset, or implement "
            "__len__ and __getitem__"
        )
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        if batch_size is None:
            raise ValueError(
                f"{what} is a Dataset, so the Trainer needs batch_size=N to batch it "
                "(or pass a DataLoader)"
            )
        return DataLoader(data, batch_size=batch_size)
    raise TypeError(
        f"{what} must be a torch DataLoader or a map-style Dataset, got {type(data).__name__}"
    )
