"""``deepseek.distributed``: process groups and the ``ddp`` strategy (deepseek-dist).

A thin layer over ``torch.distributed``; ``get_rank``, ``get_world_size``,
``is_initialized`` and ``destroy_process_group`` are torch's own functions::

    >>> import deepseek.distributed as ddist
    >>> ddist.is_initialized()
    False
    >>> ddist.available_backends()[0]
    'gloo'

Training on several processes needs only ``Trainer(..., strategy="ddp")`` and a
``torchrun --nproc-per-node N train.py`` launch.
"""

from __future__ import annotations

from typing import Any

from torch.distributed import destroy_process_group, get_rank, get_world_size, is_initialized

from deepseek.distributed.process_group import (
    TORCHRUN_VARS,
    LaunchEnv,
    available_backends,
    collective_backend,
    init_process_group,
    launch_env,
)

__all__ = [
    "TORCHRUN_VARS",
    "DDPStrategy",
    "LaunchEnv",
    "available_backends",
    "collective_backend",
    "destroy_process_group",
    "get_rank",
    "get_world_size",
    "init_process_group",
    "is_initialized",
    "launch_env",
]


def __getattr__(name: str) -> Any:
    # The strategy pulls in the training engine: import it only when asked for.
    if name == "DDPStrategy":
        from deepseek.distributed.ddp import DDPStrategy

        return DDPStrategy
    raise AttributeError(f"module 'deepseek.distributed' has no attribute {name!r}")
