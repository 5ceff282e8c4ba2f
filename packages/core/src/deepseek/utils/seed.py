"""One call to make a run reproducible: seed Python, NumPy, torch (CPU and every GPU)
and the data loader workers.

The Trainer's own ``seed=`` seeds training only (data order, dropout from the first
step). A model built *before* the Trainer draws its initial weights from the global
generators, so call :func:`seed_everything` first, as ``deepseek train`` and the
quickstart do.

>>> import torch
>>> from deepseek.utils.seed import seed_everything
>>> _ = seed_everything(0); a = torch.nn.Linear(3, 3).weight
>>> _ = seed_everything(0); b = torch.nn.Linear(3, 3).weight
>>> torch.equal(a, b)
True
"""

from __future__ import annotations

import os
import random
import warnings
from typing import Any

import torch

__all__ = ["MAX_SEED", "seed_everything", "seed_worker", "worker_generator"]

#: NumPy accepts seeds below 2**32.
MAX_SEED = 2**32 - 1

_ENV = "DEEPSEEK_SEED"
_WORKERS_ENV = "DEEPSEEK_SEED_WORKERS"


def seed_everything(seed: int | None = None, workers: bool = True) -> int:
    """Seed ``random``, NumPy (if installed), torch and all CUDA devices with ``seed``.

    ``seed=None`` reads ``DEEPSEEK_SEED`` or draws a fresh seed (printed in the
    warning so the run can be repeated). ``workers=True`` also makes
    :func:`seed_worker` (used as a DataLoader ``worker_init_fn``) seed each worker from
    its own torch seed, so workers' Python/NumPy randomness is reproducible too.
    The seed is exported as ``DEEPSEEK_SEED`` for subprocesses. Returns the seed.
    """
    if seed is None:
        env = os.environ.get(_ENV)
        if env is not None:
            seed = _parse(env, f"the {_ENV} environment variable")
        else:
            seed = random.SystemRandom().randrange(MAX_SEED + 1)
            warnings.warn(f"no seed given: using seed {seed}", stacklevel=2)
    seed = _parse(seed, "seed")
    os.environ[_ENV] = str(seed)
    os.environ[_WORKERS_ENV] = "1" if workers else "0"
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return seed


def seed_worker(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=seed_worker)``: seed a worker's ``random`` and NumPy
    from the torch seed the DataLoader gave it (different per worker and per epoch,
    reproducible given the loader's generator)."""
    worker_seed = torch.initial_seed() % (MAX_SEED + 1)
    random.seed(worker_seed)
    try:
        import numpy as np

        np.random.seed(worker_seed)
    except ImportError:
        pass


def worker_generator(seed: int | None = None) -> torch.Generator:
    """A generator for ``DataLoader(generator=...)`` seeded from ``seed`` (or the seed
    of the last :func:`seed_everything`)."""
    if seed is None:
        seed = int(os.environ.get(_ENV, "0"))
    return torch.Generator().manual_seed(_parse(seed, "seed"))


def _parse(value: Any, what: str) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"{what} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TypeError(f"{what} must be an integer, got {type(value).__name__} {value!r}")
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"{what} must be between 0 and {MAX_SEED} (2**32 - 1), got {value}")
    return value
