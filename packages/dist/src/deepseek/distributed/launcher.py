"""``deepseek launch``: torchrun's elastic agent (``torch.distributed.run``) with the
``distributed:`` section of a config as defaults.

    deepseek launch --nproc-per-node 2 train.py --lr 0.1
    deepseek launch --nproc-per-node 2 --max-restarts 3 config.yaml --set trainer.max_epochs=3
    deepseek launch --nnodes 2 --rdzv-endpoint node0:29500 --nproc-per-node 8 config.yaml

A ``.yaml``/``.yml`` target runs the config's job in every process (``deepseek train``,
which builds the strategy from the ``distributed:`` section); anything else is a script
run as torchrun would.
Each worker gets ``OMP_NUM_THREADS`` = CPU cores / processes per node unless it is set.
Before any process starts, the section's devices are checked (``backend: nccl`` on a
machine without CUDA, ``gpu_ids`` naming absent devices: one clear error).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nproc-per-node", type=int, default=None, help="processes per node")
    parser.add_argument("--nnodes", default=None, help="number of nodes, or MIN:MAX (elastic)")
    parser.add_argument("--node-rank", type=int, default=None, help="this node's rank (static)")
    parser.add_argument("--rdzv-endpoint", default=None, help="host:port of the rendezvous")
    parser.add_argument("--rdzv-backend", default=None, help="c10d (default) or static")
    parser.add_argument("--rdzv-id", default=None, help="job id shared by all nodes")
    parser.add_argument(
        "--max-restarts", type=int, default=None, help="restarts of the worker group on failure"
    )
    parser.add_argument("--master-port", type=int, default=None, help="single-node port")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override (YAML targets), e.g. --set trainer.max_epochs=3",
    )
    parser.add_argument("target", help="train.py (a script) or config.yaml (a job)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")


def threads_per_process(nproc: int) -> int:
    """CPU cores this process may use, shared by ``nproc`` workers (at least 1).

    >>> threads_per_process(10**6)
    1
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, nproc))


def torchrun_args(args: argparse.Namespace, section: Any = None) -> list[str]:
    """The ``torch.distributed.run`` command line for ``args`` (CLI flags beat the section)."""
    nproc = args.nproc_per_node
    nnodes = args.nnodes
    endpoint = args.rdzv_endpoint
    restarts = args.max_restarts
    if section is not None:
        nproc = nproc or section.processes_per_node()
        nnodes = nnodes or (str(section.nnodes) if section.nnodes != 1 else None)
        endpoint = endpoint or section.rdzv_endpoint
        restarts = restarts if restarts is not None else section.max_restarts
    nproc = nproc or 1
    command = ["--nproc-per-node", str(nproc), "--nnodes", str(nnodes or 1)]
    if restarts:
        command += ["--max-restarts", str(restarts)]
    if endpoint:
        command += ["--rdzv-endpoint", endpoint, "--rdzv-backend", args.rdzv_backend or "c10d"]
        if args.rdzv_id:
            command += ["--rdzv-id", args.rdzv_id]
    elif str(nnodes or 1) == "1":
        command += ["--standalone"] if args.master_port is None else [
            "--master-addr", "127.0.0.1", "--master-port", str(args.master_port),
        ]  # fmt: skip
    if args.node_rank is not None:
        command += ["--node-rank", str(args.node_rank)]
    target = Path(args.target)
    if target.suffix in (".yaml", ".yml"):
        command += ["-m", "deepseek.cli", "train", str(target)]
        for item in args.overrides:
            command += ["--set", item]
    else:
        if args.overrides:
            raise ValueError(
                "--set applies to config targets (.yaml); pass script arguments after it"
            )
        command.append(str(target))
    return command + list(args.args)


def run(args: argparse.Namespace) -> int:
    """``deepseek launch``: check, set up the environment, hand over to torchrun's agent."""
    target = Path(args.target)
    if not target.is_file():
        print(f"deepseek launch: error: {target} does not exist", file=sys.stderr)
        return 2
    section = None
    try:
        if target.suffix in (".yaml", ".yml"):
            from deepseek.config import load_config

            section = load_config(target, args.overrides).distributed
            if hasattr(section, "check_devices"):
                section.check_devices()  # nccl without CUDA: fail here, not in a worker
            else:
                section = None
        command = torchrun_args(args, section)
    except (ValueError, RuntimeError, FileNotFoundError, ImportError) as exc:
        print(f"deepseek launch: error: {exc}", file=sys.stderr)
        return 2
    nproc = int(command[command.index("--nproc-per-node") + 1])
    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_process(nproc)))
    # A fresh store for every rendezvous round, hosted by rank 0 on a new port (torch
    # before 2.5 did this). The agent's shared store outlives a restart with the killed
    # attempt's keys in it, so a restarted rank could read a dead peer's gloo or NCCL
    # address and wait for it forever (pytorch/pytorch#135712, back in torch 2.13).
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    if section is not None and section.gpu_ids:
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", ",".join(map(str, section.gpu_ids)))
    if section is not None and section.timeout_s:
        os.environ.setdefault("DEEPSEEK_DIST_TIMEOUT_S", str(section.timeout_s))
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torchrun

    try:
        torchrun(get_args_parser().parse_args(command))
    except ChildFailedError as exc:
        print(f"deepseek launch: a worker failed:\n{exc}", file=sys.stderr)
        return 1
    return 0


def add_launch_command(parser: Any) -> None:
    """Declare ``deepseek launch`` on the ``deepseek_cli`` hook's CommandParser."""
    launch = parser.add_command(
        "launch",
        help="run a script or a config's job on several processes (torchrun's elastic agent)",
        func=run,
        description=__doc__.split("\n\n")[0],
    )
    add_arguments(launch)
