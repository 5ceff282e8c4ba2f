"""Core's job subcommands: ``train`` and ``profile`` run what a YAML config describes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

JOB_ERRORS = (LookupError, ValueError, TypeError, ImportError, FileNotFoundError, OSError)


def add_job_commands(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="run the training job a YAML config describes")
    _job_arguments(train)
    train.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    train.set_defaults(func=run_train)

    profile = subparsers.add_parser(
        "profile", help="profile a few steps of a config's job and print the bottleneck report"
    )
    _job_arguments(profile)
    profile.add_argument("--steps", type=int, default=5, help="optimizer steps to profile")
    profile.add_argument("--warmup", type=int, default=2, help="steps to skip first")
    profile.set_defaults(func=run_profile)


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
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks")


def _load(args: argparse.Namespace):
    from deepseek.config import load_config

    return load_config(args.config, args.overrides)


def _fail(args: argparse.Namespace, exc: BaseException) -> int:
    if args.traceback:
        raise exc
    print(f"deepseek {args.command}: error: {exc}", file=sys.stderr)
    print("(run again with --traceback for the full traceback)", file=sys.stderr)
    return 2


def run_train(args: argparse.Namespace) -> int:
    from deepseek.config import dump_config

    try:
        config = _load(args)
        if args.print_config:
            print(dump_config(config), end="")
            return 0
        from deepseek.training.job import run_job

        run_job(config, config_dir=Path(args.config).resolve().parent)
    except JOB_ERRORS as exc:
        return _fail(args, exc)
    return 0


def run_profile(args: argparse.Namespace) -> int:
    """The config's job for warmup + steps optimizer steps, with a Profiler callback on
    the last ``steps`` (checkpointing and plotting off)."""
    from deepseek.callbacks import Profiler
    from deepseek.config import Component

    try:
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
        from deepseek.training.job import add_config_dir, build_trainer

        add_config_dir(Path(args.config).resolve().parent)
        trainer = build_trainer(config)
        trainer.fit()  # the Profiler callback prints the report and the trace path
    except JOB_ERRORS as exc:
        return _fail(args, exc)
    profiler = next(cb for cb in trainer.callbacks if isinstance(cb, Profiler))
    if profiler.report is None:
        print("nothing was profiled: the run ended before the profiled steps")
        return 1
    return 0
