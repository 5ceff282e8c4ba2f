"""The ``distributed:`` section of a job config (light: a dataclass and its checks).

deepseek-dist registers it with ``deepseek.config.register_section``, so
``load_config(path).distributed`` is a :class:`DistributedConfig` with key-path errors,
``--set distributed.nproc_per_node=2`` and ``--print-config``::

    distributed:
      backend: nccl                 # gloo | nccl | auto (collective backend)
      init_method: env://
      gpu_ids: [0,1,2,3,4,5,6,7]    # visible devices; also the default process count
      reduce_strategy: gradient_average   # or gradient_sum
      strategy: {name: fsdp, cpu_offload: true}   # optional: overrides trainer.strategy
      nproc_per_node: 8
      nnodes: 1
      rdzv_endpoint: host:29500
      timeout_s: 1800
      gradient_compression: {name: powersgd, rank: 2}

>>> cfg = DistributedConfig(gpu_ids=[0, 1])
>>> cfg.processes_per_node()
2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass
class DistributedConfig:
    """How a job is spread over processes and machines (see the module docstring)."""

    backend: str = "auto"
    init_method: str = "env://"
    gpu_ids: list[int] | None = None
    reduce_strategy: Literal["gradient_average", "gradient_sum"] = "gradient_average"
    strategy: Any = None
    nproc_per_node: int | None = None
    nnodes: int = 1
    rdzv_endpoint: str | None = None
    max_restarts: int = 0
    timeout_s: float | None = None
    gradient_compression: Any = None

    def __post_init__(self) -> None:
        from deepseek.distributed.compression import GradientCompression

        path = "distributed"
        if self.backend not in ("auto", "gloo", "nccl", "mpi", "cpu", "cuda", "rocm"):
            raise _error(f"{path}.backend: {self.backend!r} is not allowed; use gloo, nccl or auto")
        if self.gpu_ids is not None:
            if not self.gpu_ids or any(
                isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in self.gpu_ids
            ):
                raise _error(
                    f"{path}.gpu_ids: {self.gpu_ids!r} must be a non-empty list of device indices"
                )
            if len(set(self.gpu_ids)) != len(self.gpu_ids):
                raise _error(f"{path}.gpu_ids: {self.gpu_ids!r} names a device twice")
        for key in ("nproc_per_node", "nnodes"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise _error(f"{path}.{key}: {value!r} must be a positive int")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise _error(f"{path}.timeout_s: {self.timeout_s!r} must be > 0 seconds")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise _error(
                f"{path}.rdzv_endpoint: required when nnodes > 1 (host:port of the node all "
                "machines can reach, e.g. node0:29500)"
            )
        if self.rdzv_endpoint is not None and ":" not in str(self.rdzv_endpoint):
            raise _error(f"{path}.rdzv_endpoint: {self.rdzv_endpoint!r} is not host:port")
        if self.gradient_compression is not None:
            try:
                GradientCompression.from_value(self.gradient_compression)
            except (ValueError, TypeError) as exc:
                raise _error(f"{path}.gradient_compression: {exc}") from None

    def processes_per_node(self) -> int:
        """``nproc_per_node``, else one per listed GPU, else 1."""
        if self.nproc_per_node is not None:
            return self.nproc_per_node
        return len(self.gpu_ids) if self.gpu_ids else 1

    def check_devices(self) -> None:
        """One clear error, before any process starts, when the machine cannot run this:
        ``nccl`` without CUDA, or ``gpu_ids`` naming devices that do not exist."""
        import torch

        from deepseek.distributed.process_group import check_collective_backend

        if self.backend == "nccl":
            check_collective_backend("nccl")
        if self.gpu_ids:
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            absent = [i for i in self.gpu_ids if i >= count]
            if absent:
                raise _error(
                    f"distributed.gpu_ids: device(s) {absent} do not exist: this machine has "
                    f"{count} CUDA device(s)"
                    f"{' (CPU-only torch build)' if torch.version.cuda is None else ''}"
                    "; list existing ones, or remove gpu_ids to run on the CPU"
                )

    def strategy_options(self) -> tuple[str, dict[str, Any]] | None:
        """``(name, options)`` of ``strategy`` with the section's own settings merged in
        (``reduce_strategy``, ``timeout_s``, ``gradient_compression`` where the strategy
        takes them); None when the section names no strategy."""
        if self.strategy is None:
            return None
        if isinstance(self.strategy, str):
            name, options = self.strategy, {}
        elif isinstance(self.strategy, dict) and isinstance(self.strategy.get("name"), str):
            options = dict(self.strategy)
            name = options.pop("name")
        else:
            raise _error(
                f"distributed.strategy: expected a name or {{name: ..., <options>}}, got "
                f"{self.strategy!r}"
            )
        return name, options

    def strategy_spec(self, trainer_strategy: Any = "single") -> tuple[str, dict[str, Any]]:
        """``(name, options)`` of the strategy a job should use: this section's
        ``strategy`` (else the trainer's: a name, a ``{name, ...}`` mapping or a config
        ``Component``), with the section's ``reduce_strategy``, ``gradient_compression``,
        ``timeout_s`` and ``backend`` added where that strategy takes them. Checks the
        devices first (``nccl`` on a CPU-only machine fails here, before any group)."""
        import inspect

        from deepseek.plugins import registry
        from deepseek.plugins.specs import implementation

        self.check_devices()
        chosen = self.strategy_options()
        if chosen is None:
            if hasattr(trainer_strategy, "name") and hasattr(trainer_strategy, "kwargs"):
                trainer_strategy = {"name": trainer_strategy.name, **trainer_strategy.kwargs}
            chosen = DistributedConfig(strategy=trainer_strategy).strategy_options()
        name, options = chosen
        try:
            accepted = inspect.signature(implementation(registry("strategy").get(name))).parameters
        except (TypeError, ValueError):
            accepted = {}
        section = {
            "reduce_strategy": (
                self.reduce_strategy if self.reduce_strategy != "gradient_average" else None
            ),
            "gradient_compression": self.gradient_compression,
            "timeout_s": self.timeout_s,
            "backend": self.backend if self.backend in ("gloo", "nccl", "mpi") else None,
        }
        for key, value in section.items():
            if value is None or key in options:
                continue
            if key not in accepted:
                if key in ("reduce_strategy", "gradient_compression"):
                    raise _error(
                        f"distributed.{key}: the {name!r} strategy does not take it "
                        f"(use ddp{', fsdp' if key == 'reduce_strategy' else ''})"
                    )
                continue
            options[key] = value
        return name, options

    def resolve_strategy(self, trainer_strategy: Any = "single") -> Any:
        """The strategy object :meth:`strategy_spec` describes (an instance passes through)."""
        from deepseek.plugins import registry

        is_spec = isinstance(trainer_strategy, (str, dict)) or hasattr(trainer_strategy, "kwargs")
        if not is_spec and self.strategy is None:
            self.check_devices()
            return trainer_strategy
        name, options = self.strategy_spec(trainer_strategy)
        return registry("strategy").create(name, **options)


def _error(message: str) -> Exception:
    try:
        from deepseek.config import ConfigError
    except ImportError:  # pragma: no cover - core always has it
        return ValueError(message)
    return ConfigError(message)


__all__ = ["DistributedConfig"]
