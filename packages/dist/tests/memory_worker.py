"""Run by torchrun (2 ranks) from test_dist_planner.py: one AdamW step under ddp and fsdp,
then the bytes each rank really holds in parameters, gradients, optimizer state and the
tensors autograd saved during the forward (counted by storage)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

BATCH = 8


def make_model() -> nn.Module:
    blocks = [nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 64)) for _ in range(4)]
    return nn.Sequential(nn.Linear(32, 64), nn.Sequential(*blocks), nn.Linear(64, 10))


def local_bytes(t: torch.Tensor) -> int:
    t = t.to_local() if isinstance(t, DTensor) else t
    return t.numel() * t.element_size()


def measure(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    storages: dict[int, torch.UntypedStorage] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        local = t.to_local() if isinstance(t, DTensor) else t
        storage = local.untyped_storage()
        storages[storage.data_ptr()] = storage
        return t

    params = {id(p): p for p in model.parameters()}
    param_ptrs = {
        (p.to_local() if isinstance(p, DTensor) else p).untyped_storage().data_ptr()
        for p in params.values()
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x).square().mean()
    # What the saved tensors hold once the forward is over (FSDP has freed the gathered
    # weights by then: their storages are resized to 0).
    acts = sum(s.nbytes() for ptr, s in storages.items() if ptr not in param_ptrs)
    loss.backward()
    optimizer.step()
    return {
        "params": sum(local_bytes(p) for p in params.values()),
        "grads": sum(local_bytes(p.grad) for p in params.values() if p.grad is not None),
        "optimizer": sum(
            local_bytes(v) for s in optimizer.state.values() for k, v in s.items() if k != "step"
        ),
        "activations": acts,
    }


def main(out: Path) -> None:
    torch.set_num_threads(1)
    import deepseek as ds
    import deepseek.distributed as ddist
    from deepseek.plugins import registry

    ddist.init_process_group("gloo", timeout_s=120)
    results = {}
    for name in ("ddp", "fsdp"):
        strategy = registry("strategy").create(name)
        strategy.setup(ds.backends.get("cpu"))
        torch.manual_seed(0)
        model = strategy.setup_model(make_model())
        results[name] = measure(model, torch.randn(BATCH, 32))
    torch.manual_seed(0)
    results["single"] = measure(make_model(), torch.randn(BATCH, 32))
    torch.save(results, out / f"rank{dist.get_rank()}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
