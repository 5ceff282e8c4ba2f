"""The ranks of test_metrics' distributed test (a module without sklearn, so the
spawned processes start faster)."""

from __future__ import annotations

import os
import time

import torch

from deepseek.metrics import build_metrics


def classification_data(seed: int = 0, n: int = 72, classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, classes, (n,), generator=g)
    logits = torch.randn(n, classes, generator=g) + 1.5 * torch.nn.functional.one_hot(
        target, classes
    ) * (torch.rand(n, 1, generator=g) > 0.4)
    return logits, target


def ranks(rank: int, world: int, port: int, out: dict) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        logits, target = classification_data(seed=5, n=60)
        # uneven shards, and rank 1 never sees class 3 in its targets or predictions
        keep = torch.arange(60) < 37 if rank == 0 else torch.arange(60) >= 37
        mine_logits, mine_target = logits[keep], target[keep]
        if rank == 1:
            mask = (mine_target != 3) & (mine_logits.argmax(-1) != 3)
            mine_logits, mine_target = mine_logits[mask], mine_target[mask]
        metrics = build_metrics(["accuracy", "f1_macro", "auroc", "mse"])
        for name, metric in metrics.items():
            if name == "mse":
                metric.update(mine_logits[:, 0], mine_target.float())
            else:
                metric.update(mine_logits, mine_target)
        values = {name: float(m.compute()) for name, m in metrics.items()}
        gathered = [None] * world
        dist.all_gather_object(gathered, (values, mine_logits, mine_target))
        if rank == 0:
            out.update(values=[g[0] for g in gathered], shards=[g[1:] for g in gathered])
    finally:
        dist.destroy_process_group()
        # gloo's threads still release the last collective's tensors (taking the GIL):
        # let them before the interpreter finalizes, or the process may abort (exit -6).
        time.sleep(0.1)
