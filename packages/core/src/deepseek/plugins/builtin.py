"""deepseek-core's own plugin: registered through the ``deepseek`` entry point like any
third-party plugin. Factories are deferred so discovery imports nothing heavy."""

from __future__ import annotations

from deepseek.plugins.commands import CommandParser
from deepseek.plugins.hookspecs import hookimpl
from deepseek.plugins.specs import (
    BackendSpec,
    CallbackSpec,
    MetricSpec,
    PrecisionSpec,
    StrategySpec,
    deferred,
)


@hookimpl
def deepseek_backends() -> list[BackendSpec]:
    return [
        BackendSpec("cpu", deferred("deepseek.backends.cpu:CPUBackend"), "host CPU (gloo)"),
        BackendSpec("cuda", deferred("deepseek.backends.cuda:CUDABackend"), "NVIDIA GPUs (nccl)"),
        BackendSpec("rocm", deferred("deepseek.backends.rocm:ROCmBackend"), "AMD GPUs (rccl)"),
    ]


@hookimpl
def deepseek_strategies() -> list[StrategySpec]:
    return [
        StrategySpec(
            "single",
            deferred("deepseek.training.strategy:SingleDeviceStrategy"),
            "one process, one device",
        )
    ]


@hookimpl
def deepseek_precisions() -> list[PrecisionSpec]:
    target = "deepseek.training.precision:"
    return [
        PrecisionSpec("fp32", deferred(target + "FP32Precision"), "full precision"),
        PrecisionSpec(
            "fp16-mixed",
            deferred(target + "FP16MixedPrecision"),
            "fp16 autocast with loss scaling (dynamic or static)",
        ),
        PrecisionSpec(
            "bf16-mixed", deferred(target + "BF16MixedPrecision"), "bf16 autocast, no scaling"
        ),
    ]


@hookimpl
def deepseek_callbacks() -> list[CallbackSpec]:
    return [
        CallbackSpec(
            "model_checkpoint",
            deferred("deepseek.callbacks.model_checkpoint:ModelCheckpoint"),
            "save checkpoints by epoch or step, keep the best k",
        ),
        CallbackSpec(
            "early_stopping",
            deferred("deepseek.callbacks.early_stopping:EarlyStopping"),
            "stop when a monitored metric stops improving",
        ),
        CallbackSpec(
            "progress_bar",
            deferred("deepseek.callbacks.progress:ProgressBar"),
            "tqdm bar with loss, throughput and ETA",
        ),
        CallbackSpec(
            "csv_logger",
            deferred("deepseek.callbacks.csv_logger:CSVLogger"),
            "append metrics to a CSV file",
        ),
        CallbackSpec(
            "lr_monitor",
            deferred("deepseek.callbacks.lr_monitor:LearningRateMonitor"),
            "log the learning rate of every parameter group",
        ),
        CallbackSpec(
            "profiler",
            deferred("deepseek.callbacks.profiler:Profiler"),
            "profile steps N..M, write a Perfetto trace and a bottleneck report",
        ),
    ]


@hookimpl
def deepseek_cli(parser: CommandParser) -> None:
    from deepseek.cli import commands

    commands.add_core_commands(parser)


@hookimpl
def deepseek_metrics() -> list[MetricSpec]:
    # deepseek.metrics declares core's metrics next to their code; discovery imports only
    # that module (its factories are deferred), and only when the metric registry is used.
    try:
        from deepseek.metrics import builtin_specs
    except ImportError as exc:
        if exc.name != "deepseek.metrics":
            raise  # deepseek.metrics exists but is broken: report it, do not hide it
        return []
    return list(builtin_specs())
