"""deepseek-dist's plugin: strategies, the `distributed:` config section, CLI commands
and a ``deepseek env`` report."""

from __future__ import annotations

from deepseek.plugins import StrategySpec, deferred, hookimpl


@hookimpl
def deepseek_strategies() -> list[StrategySpec]:
    return [
        StrategySpec(
            "ddp",
            deferred("deepseek.distributed.ddp:DDPStrategy"),
            "DistributedDataParallel, one process per device (launch with torchrun)",
        ),
        StrategySpec(
            "fsdp",
            deferred("deepseek.distributed.fsdp:FSDPStrategy"),
            "FSDP2 fully_shard per block: parameters, gradients, optimizer state sharded",
        ),
        StrategySpec(
            "tp",
            deferred("deepseek.distributed.tensor_parallel:TensorParallelStrategy"),
            "tensor parallelism: parallelize_module with a colwise/rowwise/sequence plan",
        ),
        StrategySpec(
            "2d",
            deferred("deepseek.distributed.tensor_parallel:TwoDStrategy"),
            "FSDP x tensor parallelism on a 2-D (dp, tp) DeviceMesh",
        ),
        StrategySpec(
            "pipeline",
            deferred("deepseek.distributed.pipeline:PipelineStrategy"),
            "pipeline parallelism (torch.distributed.pipelining: GPipe, 1F1B)",
        ),
    ]


@hookimpl
def deepseek_env_report() -> list[str]:
    import torch.distributed as dist

    if not dist.is_available():
        return ["torch.distributed: not available in this torch build"]
    from deepseek.distributed.process_group import available_backends

    found = available_backends()
    missing = [name for name in ("gloo", "nccl", "mpi") if name not in found]
    return [
        f"torch.distributed backends available: {', '.join(found) or 'none'}",
        f"torch.distributed backends not available: {', '.join(missing) or 'none'}",
    ]


def _register_config_section() -> None:
    try:
        from deepseek.config import register_section
    except ImportError:  # an older deepseek-core: the section stays a plain mapping
        return
    register_section("distributed", "deepseek.distributed.config:DistributedConfig")


_register_config_section()


@hookimpl
def deepseek_cli(parser) -> None:
    from deepseek.distributed.checkpoint import add_checkpoint_command
    from deepseek.distributed.launcher import add_launch_command
    from deepseek.distributed.planner import add_plan_command

    add_launch_command(parser)
    add_plan_command(parser)
    add_checkpoint_command(parser)
