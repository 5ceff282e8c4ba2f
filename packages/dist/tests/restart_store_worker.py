"""Run by ``deepseek launch --max-restarts 1`` from test_dist_launch.py. Attempt 0 joins
the group, leaves a key in the group's store and rank 1 SIGKILLs itself; attempt 1 joins
again and rank 0 records whether it still sees that key (torchrun's agent keeps one store
for the whole job, so without a per-attempt prefix it does: gloo's stale peer addresses
are what made restarts hang)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

import deepseek.distributed as ddist

out = Path(sys.argv[1])
attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
ddist.init_process_group("gloo", timeout_s=60)
store = dist.distributed_c10d._get_default_store()
if attempt == 0:
    store.set("left_by_attempt_0", "1")
    dist.barrier()
    if dist.get_rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(120)  # the agent stops this worker when it sees rank 1 die
total = torch.ones(1) * (dist.get_rank() + 1)
dist.all_reduce(total)
if dist.get_rank() == 0:
    seen = store.check(["left_by_attempt_0"])
    (out / "result.txt").write_text(f"attempt={attempt} stale_key_seen={seen} sum={total.item():g}")
dist.barrier()
ddist.destroy_process_group()
