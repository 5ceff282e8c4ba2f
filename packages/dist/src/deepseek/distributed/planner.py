"""``deepseek plan``: per-rank memory of a model under each strategy, computed on the meta
device (no weights are allocated, so a 7B-parameter model is planned on a laptop).

For each strategy it reports, per rank: parameters, gradients, optimizer state (AdamW:
two fp32 moments per parameter; SGD with momentum: one; plain SGD: none), and
activations (the bytes autograd saves for backward during one forward pass of the
batch, found by running the model on meta tensors under
``torch.autograd.graph.saved_tensors_hooks``), with and without activation checkpointing
of the repeated blocks.

    >>> import torch
    >>> layers = [torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8)]
    >>> model = torch.nn.Sequential(*layers)
    >>> plan = plan_memory(lambda: model, strategies=["single", "fsdp"], world_size=2,
    ...                    batch_size=4, input_shape=(64,))
    >>> plan["single"].params == 4 * (64 * 64 + 64 + 64 * 8 + 8)
    True
    >>> plan["fsdp"].params * 2 == plan["single"].params
    True
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

STRATEGIES = ("single", "ddp", "fsdp", "tp", "pipeline")
OPTIMIZER_STATES = {"adamw": 2, "adam": 2, "sgd": 0, "sgd-momentum": 1}
PRECISION_BYTES = {"fp32": 4, "bf16-mixed": 2, "fp16-mixed": 2}


@dataclass
class MemoryEstimate:
    """Bytes per rank."""

    params: int
    grads: int
    optimizer: int
    activations: int
    activations_checkpointed: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations

    @property
    def total_checkpointed(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations_checkpointed


def _meta_model(factory: Callable[[], nn.Module]) -> nn.Module:
    with torch.device("meta"):
        model = factory()
    if not isinstance(model, nn.Module):
        raise TypeError(f"the model factory returned {type(model).__name__}, not an nn.Module")
    return model.to("meta")  # a factory that returned an already built model


def example_input(model: nn.Module, batch_size: int, seq_len: int | None,
                  input_shape: Sequence[int] | None) -> torch.Tensor:  # fmt: skip
    """A meta batch for ``model``: ``input_shape`` (per sample) when given; else from the
    first layer (Embedding: token ids of ``seq_len``; Linear: features)."""
    if input_shape is not None:
        return torch.empty(batch_size, *input_shape, device="meta")
    first = next((m for m in model.modules() if not list(m.children())), None)
    if isinstance(first, nn.Embedding):
        return torch.zeros(batch_size, seq_len or 128, dtype=torch.long, device="meta")
    if isinstance(first, nn.Linear):
        shape = (seq_len, first.in_features) if seq_len else (first.in_features,)
        return torch.empty(batch_size, *shape, device="meta")
    raise ValueError(
        f"cannot guess an input for {type(model).__name__} (first layer "
        f"{type(first).__name__}); pass input_shape (per sample, e.g. --input-shape 1,8,8)"
    )


def saved_activation_bytes(
    model: nn.Module, inputs: Any, precision_bytes: int = 4
) -> tuple[int, int]:
    """Bytes autograd saves for backward in one forward: ``(all, with the repeated blocks
    checkpointed)``. Tensors are counted once each (by identity)."""
    from deepseek.distributed.sharded import find_blocks

    blocks = {id(m): m for _, m in find_blocks(model)}
    seen: set[int] = set()
    current: list[int | None] = [None]  # the block being run, if any
    per_block: dict[int, int] = {}
    block_inputs = 0
    outside = 0

    params = {id(p) for p in model.parameters()}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal outside
        root = tensor._base if tensor._base is not None else tensor
        key = id(root)
        if key in params:  # weights saved for backward are counted as parameters
            return tensor
        if key not in seen:
            seen.add(key)
            size = root.numel() * (
                precision_bytes if root.is_floating_point() else root.element_size()
            )
            if current[0] is None:
                outside += size
            else:
                per_block[current[0]] = per_block.get(current[0], 0) + size
        return tensor

    def enter(module: nn.Module, args: Any) -> None:
        nonlocal block_inputs
        current[0] = id(module)
        for a in args if isinstance(args, tuple) else (args,):
            if isinstance(a, torch.Tensor) and a.is_floating_point():
                block_inputs += a.numel() * precision_bytes

    def leave(module: nn.Module, args: Any, out: Any) -> None:
        current[0] = None

    handles = []
    for block in blocks.values():
        handles.append(block.register_forward_pre_hook(enter))
        handles.append(block.register_forward_hook(leave))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(inputs)
    finally:
        for h in handles:
            h.remove()
    total = outside + sum(per_block.values())
    checkpointed = outside + block_inputs + max(per_block.values(), default=0)
    return total, min(total, checkpointed)


def plan_memory(
    factory: Callable[[], nn.Module],
    *,
    strategies: Sequence[str] = STRATEGIES,
    world_size: int = 1,
    batch_size: int = 1,
    seq_len: int | None = None,
    precision: str = "fp32",
    optimizer: str = "adamw",
    input_shape: Sequence[int] | None = None,
) -> dict[str, MemoryEstimate]:
    """Per-rank :class:`MemoryEstimate` for each strategy; ``batch_size`` is per rank for
    ``ddp``/``fsdp`` and the whole (pipelined / tensor-parallel) batch otherwise."""
    if precision not in PRECISION_BYTES:
        raise ValueError(
            f"precision must be one of {', '.join(PRECISION_BYTES)}, got {precision!r}"
        )
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(
            f"optimizer must be one of {', '.join(OPTIMIZER_STATES)}, got {optimizer!r}"
        )
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; plan knows {', '.join(STRATEGIES)}")
    model = _meta_model(factory)
    numel = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    params, grads = 4 * numel, 4 * trainable  # fp32 master weights and gradients
    opt = 4 * OPTIMIZER_STATES[optimizer] * trainable
    x = example_input(model, batch_size, seq_len, input_shape)
    acts, acts_ckpt = saved_activation_bytes(model, x, PRECISION_BYTES[precision])
    w = max(1, world_size)
    plans = {}
    for name in strategies:
        if name in ("single", "ddp"):
            plans[name] = MemoryEstimate(params, grads, opt, acts, acts_ckpt)
        elif name == "fsdp":
            shard = lambda n: math.ceil(n / w)  # noqa: E731
            plans[name] = MemoryEstimate(shard(params), shard(grads), shard(opt), acts, acts_ckpt)
        else:  # tp / pipeline: weights split w ways; activations of the whole batch split too
            shard = lambda n: math.ceil(n / w)  # noqa: E731
            plans[name] = MemoryEstimate(
                shard(params), shard(grads), shard(opt), shard(acts), shard(acts_ckpt)
            )
    return plans


def format_plan(plans: dict[str, MemoryEstimate], world_size: int) -> str:
    def gib(n: int) -> str:
        return f"{n / 2**30:.3f}" if n >= 2**24 else f"{n / 2**20:.2f} MiB"

    lines = [
        f"per-rank memory with {world_size} rank(s) (GiB unless marked)",
        "| strategy | params | grads | optimizer | activations | total "
        "| activations (ckpt) | total (ckpt) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, e in plans.items():
        lines.append(
            f"| {name} | {gib(e.params)} | {gib(e.grads)} | {gib(e.optimizer)} | "
            f"{gib(e.activations)} | {gib(e.total)} | {gib(e.activations_checkpointed)} | "
            f"{gib(e.total_checkpointed)} |"
        )
    return "\n".join(lines)


def _factory(name: str) -> Callable[[], nn.Module]:
    if ":" in name:
        import os

        from deepseek.config import import_target

        # Loaded by file location from the working directory, then installed packages:
        # a file next to the command never shadows an installed module.
        return import_target(name, "--model", config_dir=os.getcwd())
    from deepseek.plugins import registry

    spec = registry("model").get(name)
    return spec.factory


def run(args: argparse.Namespace) -> int:
    import sys

    try:
        strategies = args.strategy.split(",") if args.strategy else list(STRATEGIES)
        shape = tuple(int(v) for v in args.input_shape.split(",")) if args.input_shape else None
        plans = plan_memory(
            _factory(args.model), strategies=strategies, world_size=args.world_size,
            batch_size=args.batch_size, seq_len=args.seq_len, precision=args.precision,
            optimizer=args.optimizer, input_shape=shape,
        )  # fmt: skip
    except (ValueError, TypeError, LookupError, ImportError, AttributeError) as exc:
        print(f"deepseek plan: error: {exc}", file=sys.stderr)
        return 2
    print(format_plan(plans, args.world_size))
    return 0


def add_plan_command(parser: Any) -> None:
    plan = parser.add_command(
        "plan", help="estimate per-rank memory of a model under each strategy (meta device)",
        func=run,
    )  # fmt: skip
    plan.add_argument("--model", required=True, help="registry name or module:callable")
    plan.add_argument("--world-size", type=int, default=1)
    plan.add_argument("--strategy", default=None, help="comma-separated; default: all")
    plan.add_argument("--precision", default="fp32", choices=sorted(PRECISION_BYTES))
    plan.add_argument("--optimizer", default="adamw", choices=sorted(OPTIMIZER_STATES))
    plan.add_argument("--batch-size", type=int, default=1)
    plan.add_argument("--seq-len", type=int, default=None)
    plan.add_argument("--input-shape", default=None, help="per-sample input shape, e.g. 1,8,8")
