"""Core's job subcommands: ``train``, ``profile``, ``validate`` and ``predict`` run what a
YAML config describes. Any config or job error is one line on stderr and exit code 2
(``--traceback`` shows the full traceback)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from deepseek.config.errors import ConfigError
from deepseek.plugins.commands import CommandParser

JOB_ERRORS = (LookupError, ValueError, TypeError, ImportError, OSError, ConfigError)


def add_job_commands(parser: CommandParser) -> None:
    """Declare the job commands on the ``deepseek_cli`` hook's CommandParser."""
    add = parser.add_command
    train = add("train", help="run the training job a YAML config describes")
    _job_arguments(train)
    train.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (every default filled in) and exit",
    )
    train.set_defaults(func=run_train)

    profile = add(
        "profile", help="profile a few steps of a config's job and print the bottleneck report"
    )
    _job_arguments(profile)
    profile.add_argument("--steps", type=int, default=5, help="optimizer steps to profile")
    profile.add_argument("--warmup", type=int, default=2, help="steps to skip first")
    profile.set_defaults(func=run_profile)

    for stage, text in (
        ("validate", "score a checkpoint of a config's job on its validation data"),
        ("predict", "predict the validation data with a checkpoint; saves predictions.pt"),
    ):
        evaluate = add(stage, help=text)
        _job_arguments(evaluate)
        evaluate.add_argument(
            "--ckpt",
            default="best",
            metavar="best|last|PATH",
            help="which checkpoint of the run (default: best)",
        )
        evaluate.set_defaults(func=run_evaluation, stage=stage)


def _job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="path to the YAML config")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set trainer.max_epochs=3 (repeatable)",
    )
    parser.add_argument(
        "--safe",
        action="store_true",
        help="refuse module:callable targets outside torch, deepseek and the config's folder "
        "(a config is code, like a script: use this for configs you did not write)",
    )
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks")


def _load(args: argparse.Namespace) -> Any:
    from deepseek.config import load_config

    return load_config(args.config, args.overrides, safe=args.safe)


def _fail(args: argparse.Namespace, exc: BaseException) -> int:
    if args.traceback:
        raise exc
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, KeyError) and text.startswith("'"):
        text = text.strip("'")
    if not isinstance(exc, (ConfigError, LookupError)) and type(exc).__name__ not in text:
        text = f"{type(exc).__name__}: {text}"
    print(f"deepseek {args.command}: error: {text}", file=sys.stderr)
    print("(run again with --traceback for the full traceback)", file=sys.stderr)
    return 2


def _guarded(body: Any, args: argparse.Namespace) -> int:
    try:
        return int(body() or 0)
    except Exception as exc:  # any job error is one line (--traceback: all)
        from deepseek.plugins.manager import PluginError

        if isinstance(exc, PluginError) and not args.traceback:
            raise  # deepseek.cli.main prints plugin faults as one line (exit 1)
        return _fail(args, exc)


def run_train(args: argparse.Namespace) -> int:
    def body() -> int:
        from deepseek.config import dump_config

        config = _load(args)
        if args.print_config:
            print(dump_config(config), end="")
            return 0
        from deepseek.training.job import run_job

        run_job(config)
        return 0

    return _guarded(body, args)


def run_profile(args: argparse.Namespace) -> int:
    """The config's job for warmup + steps optimizer steps, with a Profiler callback on
    the last ``steps`` (checkpointing and plotting off)."""

    def body() -> int:
        from deepseek.callbacks import Profiler
        from deepseek.config import Component

        if args.steps < 1:
            raise ConfigError(f"--steps {args.steps}: profile at least one step (e.g. --steps 5)")
        if args.warmup < 0:
            raise ConfigError(f"--warmup {args.warmup}: must be 0 or more (e.g. --warmup 2)")
        config = _load(args)
        config.trainer.max_steps = args.warmup + args.steps
        config.trainer.max_epochs = None
        config.trainer.resume = None
        config.plot = False
        config.callbacks = [
            cb for cb in config.callbacks if cb.name not in ("model_checkpoint", "profiler")
        ]
        # Profiler steps count like global_step (0-based): skip `warmup`, take `steps`.
        window = {"start_step": args.warmup, "end_step": args.warmup + args.steps - 1}
        config.callbacks.append(Component("profiler", window))
        from deepseek.training.job import build_trainer

        trainer = build_trainer(config)
        trainer.fit()  # the Profiler callback prints the report and the trace path
        profiler = next(cb for cb in trainer.callbacks if isinstance(cb, Profiler))
        if profiler.report is None:
            print("nothing was profiled: the run ended before the profiled steps")
            return 1
        return 0

    return _guarded(body, args)


def run_evaluation(args: argparse.Namespace) -> int:
    def body() -> int:
        from deepseek.training.job import run_evaluation as evaluate

        config = _load(args)
        evaluate(config, args.stage, args.ckpt)
        return 0

    return _guarded(body, args)
