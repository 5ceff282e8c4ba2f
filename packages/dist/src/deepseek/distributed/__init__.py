"""``deepseek.distributed``: process groups, parallel strategies, gradient compression,
launcher, sharded checkpoints and a memory planner (deepseek-dist).

A thin layer over ``torch.distributed``; ``get_rank``, ``get_world_size``,
``is_initialized`` and ``destroy_process_group`` are torch's own functions::

    >>> import deepseek.distributed as ddist
    >>> ddist.is_initialized()
    False
    >>> ddist.available_backends()[0]
    'gloo'

Training on several processes needs only ``Trainer(..., strategy="ddp")`` (or ``"fsdp"``,
``"tp"``, ``"2d"``, ``"pipeline"``) and a ``deepseek launch --nproc-per-node N train.py``
(or ``torchrun``) launch. Outside a launcher, ``init_process_group`` joins a world of one.
"""

from __future__ import annotations

from typing import Any

from torch.distributed import destroy_process_group, get_rank, get_world_size, is_initialized

from deepseek.distributed.process_group import (
    SLURM_VARS,
    TORCHRUN_VARS,
    LaunchEnv,
    available_backends,
    collective_backend,
    current_launch,
    init_process_group,
    launch_env,
    monitored_barrier,
    slurm_env,
)

# Public classes that pull in the training engine or torch's parallel modules: imported
# on first use (name -> module).
_LAZY = {
    "DDPStrategy": "deepseek.distributed.ddp",
    "FSDPStrategy": "deepseek.distributed.fsdp",
    "TensorParallelStrategy": "deepseek.distributed.tensor_parallel",
    "TwoDStrategy": "deepseek.distributed.tensor_parallel",
    "PipelineStrategy": "deepseek.distributed.pipeline",
    "PipelineParallel": "deepseek.distributed.pipeline",
    "GradientCompression": "deepseek.distributed.compression",
    "DistributedConfig": "deepseek.distributed.config",
    "ProcessGroupStrategy": "deepseek.distributed.base",
}

__all__ = [
    "SLURM_VARS",
    "TORCHRUN_VARS",
    "LaunchEnv",
    "available_backends",
    "collective_backend",
    "current_launch",
    "destroy_process_group",
    "get_rank",
    "get_world_size",
    "init_process_group",
    "is_initialized",
    "launch_env",
    "monitored_barrier",
    "slurm_env",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deepseek.distributed' has no attribute {name!r}")
