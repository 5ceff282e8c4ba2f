"""Helpers for the ``benchmarks/bench_dist_*.py`` scripts: run this same script under
torchrun and collect what each rank saved (kept here so the scripts stay one file each)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch


def is_worker() -> bool:
    return "RANK" in os.environ and "LOCAL_RANK" in os.environ


def run_workers(script: str, nproc: int, args: list[str], timeout: int = 1800) -> list[Any]:
    """Run ``script`` under torchrun with ``nproc`` processes (1 thread each); returns each
    rank's ``torch.save``d result (the script saves to ``$BENCH_OUT/rank<R>.pt``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, OMP_NUM_THREADS="1", BENCH_OUT=out)
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--master-addr", "127.0.0.1", "--master-port", str(port), script, *args,
        ]  # fmt: skip
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{script} failed:\n{proc.stderr[-4000:]}")
        return [torch.load(Path(out) / f"rank{r}.pt", weights_only=True) for r in range(nproc)]


def save_result(result: Any) -> None:
    rank = int(os.environ["RANK"])
    torch.save(result, Path(os.environ["BENCH_OUT"]) / f"rank{rank}.pt")
