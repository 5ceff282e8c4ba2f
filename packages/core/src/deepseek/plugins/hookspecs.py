"""Every hook a DeepSeek plugin may implement.

A plugin is a module (or any object) with functions decorated by
``deepseek.plugins.hookimpl`` whose names match the specs below. A distribution makes
it discoverable with an entry point in group ``deepseek``::

    [project.entry-points.deepseek]
    mybackend = "deepseek_mybackend.plugin"

The registration hooks (``deepseek_backends`` ... ``deepseek_metrics``) return an
iterable of records (or a single record); they are called once, the first time the
matching registry is used, never on a training hot path. Every hook is called through
pluggy, one plugin at a time in pluggy's order (``tryfirst``/``trylast`` apply, as do
``PluginManager.enable_tracing`` and hook-call monitoring), so each record is credited
to the plugin that returned it. Check a plugin with ``deepseek plugins --check NAME``;
start one with ``deepseek new-plugin NAME``.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from deepseek.plugins.commands import CommandParser
from deepseek.plugins.specs import (
    AlgorithmSpec,
    BackendSpec,
    CallbackSpec,
    MetricSpec,
    ModelSpec,
    PrecisionSpec,
    StrategySpec,
)

PROJECT_NAME = "deepseek"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def deepseek_backends() -> Iterable[BackendSpec]:
    """Device families (``cpu``, ``cuda``, ``rocm``, or a plugin's ``xpu``/simulator).

    Called when ``deepseek.backends`` is first asked for a backend. Each record's factory
    takes no arguments and returns a ``deepseek.backends.Backend``.
    """


@hookspec
def deepseek_strategies() -> Iterable[StrategySpec]:
    """Parallel strategies (``single``, ``ddp``, ``fsdp``, ...), looked up by the Trainer's
    ``strategy=`` argument and the config's ``trainer.strategy``."""


@hookspec
def deepseek_precisions() -> Iterable[PrecisionSpec]:
    """Precision plugins (``fp32``, ``fp16-mixed``, ``bf16-mixed``), looked up by the
    Trainer's ``precision=`` argument."""


@hookspec
def deepseek_callbacks() -> Iterable[CallbackSpec]:
    """Callbacks a config can name (``callbacks: [{name: model_checkpoint, ...}]``)."""


@hookspec
def deepseek_algorithms() -> Iterable[AlgorithmSpec]:
    """Model transformations: quantization, pruning, distillation, ..."""


@hookspec
def deepseek_models() -> Iterable[ModelSpec]:
    """Named models a config can build (``model: {name: resnet50}``)."""


@hookspec
def deepseek_metrics() -> Iterable[MetricSpec]:
    """Named metrics (``accuracy``, ``perplexity``, ``dice``, ...) a config's ``metrics:``
    list or the Trainer can ask for. Each record's factory takes the metric's options as
    keyword arguments and returns a ``deepseek.metrics`` metric."""


@hookspec
def deepseek_cli(parser: CommandParser, subparsers: CommandParser) -> None:
    """Add subcommands to the ``deepseek`` command line.

    Implement it with the argument ``parser`` (a :class:`CommandParser`) and call
    ``parser.add_command(name, help=..., func=callable)``; it returns an
    ``argparse.ArgumentParser`` for the command's own arguments. The callable receives
    the parsed ``argparse.Namespace`` and returns an exit status (``int``) or ``None``
    for 0. Pass ``override=True`` to replace another plugin's command of that name.

    ``subparsers`` is the same object under its pre-0.2 name; its ``add_parser`` still
    works for one release, with a ``DeprecationWarning``.
    """


@hookspec
def deepseek_env_report() -> Iterable[str]:
    """Extra lines for ``deepseek env`` / ``check_env`` (a plugin's own diagnostics)."""


HOOK_NAMES: list[str] = sorted(name for name in dir() if name.startswith("deepseek_"))
"""Every hook a plugin may implement (for did-you-mean suggestions)."""
