"""Joining the default process group from the environment ``torchrun`` sets.

Everything here composes ``torch.distributed``; the only additions are one clear error
when the launch variables are missing and resolving ``backend="auto"`` (or a DeepSeek
backend name) to the collective backend that suits the device.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from deepseek.backends import Backend

# What torchrun exports for every process it starts.
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class LaunchEnv:
    """This process's place in the job, as torchrun described it."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def _int_var(environ: Mapping[str, str], name: str) -> int:
    value = environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"environment variable {name}={value!r} is not an integer; it is set by torchrun, "
            "so launch with `torchrun --nproc-per-node N` instead of setting it by hand"
        ) from None


def launch_env(environ: Mapping[str, str] | None = None) -> LaunchEnv:
    """Read and check torchrun's variables (``os.environ`` by default).

    >>> launch_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
    ...             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}).rank
    1
    """
    environ = os.environ if environ is None else environ
    missing = [name for name in TORCHRUN_VARS if not environ.get(name)]
    if missing:
        raise RuntimeError(
            f"cannot join a process group: environment variable(s) {', '.join(missing)} "
            "not set. Launch the script with torchrun, e.g. "
            "`torchrun --nproc-per-node N train.py`, which sets "
            f"{', '.join(TORCHRUN_VARS)} for every process."
        )
    env = LaunchEnv(
        rank=_int_var(environ, "RANK"),
        world_size=_int_var(environ, "WORLD_SIZE"),
        local_rank=_int_var(environ, "LOCAL_RANK"),
        master_addr=environ["MASTER_ADDR"],
        master_port=_int_var(environ, "MASTER_PORT"),
    )
    if env.world_size < 1 or not 0 <= env.rank < env.world_size or env.local_rank < 0:
        raise ValueError(
            f"inconsistent launch variables RANK={env.rank}, WORLD_SIZE={env.world_size}, "
            f"LOCAL_RANK={env.local_rank}: need 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0"
        )
    if not 0 < env.master_port < 65536:
        raise ValueError(f"MASTER_PORT={env.master_port} is not a TCP port (1-65535)")
    return env


def collective_backend(backend: str | Backend = "auto") -> str:
    """The ``torch.distributed`` backend for ``backend``: a DeepSeek ``Backend``, a backend
    name (``"auto"``, ``"cpu"``, ``"cuda"``, ...) or a collective name (``"gloo"``, ``"nccl"``)."""
    if isinstance(backend, Backend):
        return backend.collective_backend
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string or a Backend, got {type(backend).__name__}")
    name = backend.strip().lower()
    if name in dist.Backend.backend_list and name not in ("undefined", "fake"):
        return name
    from deepseek import backends

    return backends.get(name).collective_backend


def init_process_group(backend: str | Backend = "auto", **kwargs: Any) -> str:
    """Join the default process group; returns the collective backend used (e.g. ``"gloo"``).

    ``backend`` is resolved by :func:`collective_backend`; ``kwargs`` go to
    ``torch.distributed.init_process_group``. Without ``init_method`` or ``store`` the
    group is joined from torchrun's environment (checked first, with a clear error).
    Run under ``torchrun --nproc-per-node 2 script.py``::

        import deepseek.distributed as ddist
        ddist.init_process_group()          # gloo on CPU, nccl on NVIDIA GPUs
        print(ddist.get_rank(), ddist.get_world_size())
        ddist.destroy_process_group()
    """
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed support")
    if dist.is_initialized():
        raise RuntimeError(
            f"the default process group is already initialized (backend "
            f"{dist.get_backend()!r}); check deepseek.distributed.is_initialized() first, "
            "or call destroy_process_group() before joining again"
        )
    name = collective_backend(backend)
    if not dist.is_backend_available(name):
        raise RuntimeError(
            f"torch.distributed backend {name!r} is not available in this torch build "
            f"({', '.join(available_backends()) or 'none'} available)"
        )
    if "init_method" not in kwargs and "store" not in kwargs:
        launch_env()  # the env:// rendezvous would otherwise fail deep inside torch
    dist.init_process_group(name, **kwargs)
    return name


def available_backends() -> list[str]:
    """The collective backends this torch build can use, of gloo, nccl and mpi."""
    if not dist.is_available():
        return []
    return [name for name in ("gloo", "nccl", "mpi") if dist.is_backend_available(name)]
