"""``python -m deepseek.distributed.job config.yaml [--set k=v ...]``: the config's job in
one process of a ``deepseek launch``; the ``distributed:`` section picks and configures the
strategy (see ``DistributedConfig.resolve_strategy``), then core's ``run_job`` runs it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepseek.distributed.job")
    parser.add_argument("config")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    from deepseek.config import load_config
    from deepseek.training.job import run_job

    config = load_config(args.config, args.overrides)
    section = config.distributed
    if hasattr(section, "strategy_spec"):
        from deepseek.config import Component

        name, options = section.strategy_spec(config.trainer.strategy)
        config.trainer.strategy = Component(name, options)
    run_job(config, config_dir=Path(args.config).resolve().parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
