"""Started twice by test_dist_launch.py with SLURM's variables (as ``srun -n 2`` sets them),
without torchrun: joins the group from SLURM_PROCID/NTASKS/LOCALID/JOB_NODELIST."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

import deepseek.distributed as ddist

if __name__ == "__main__":
    backend = ddist.init_process_group("gloo", timeout_s=60)
    value = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(value)
    out = Path(sys.argv[1]) / f"rank{dist.get_rank()}.pt"
    torch.save({"rank": dist.get_rank(), "world": dist.get_world_size(), "sum": value,
                "backend": backend}, out)  # fmt: skip
    dist.destroy_process_group()
