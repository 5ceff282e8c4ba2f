"""Pipeline parallelism on ``torch.distributed.pipelining``: ``PipelineParallel`` and the
``pipeline`` strategy.

The model is cut into ``num_stages`` consecutive stages, one per rank (two or more per
rank for the interleaved schedule); each rank keeps only its stage's parameters. A batch
is split into ``num_microbatches`` microbatches that flow through the stages under a
schedule from torch: ``gpipe`` (``ScheduleGPipe``: all forwards, then all backwards),
``1f1b`` (``Schedule1F1B``: one forward, one backward in the steady state, less
activation memory) or ``interleaved`` (``ScheduleInterleaved1F1B``, several stages per
rank; it runs on gloo too).

The model must run as a sequence of layers: an ``nn.Sequential`` (nested
``nn.Sequential`` children are flattened, so ``Sequential(stem, Sequential(*blocks),
head)`` splits between blocks). Split points are given by the first layer name of each
stage after the first (``split_points=["blocks.2"]``), or by count (balanced by
parameter count when omitted).

    >>> import torch
    >>> layers = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(4)])
    >>> split_layers(layers, num_stages=2)
    [['0', '1'], ['2', '3']]
    >>> split_layers(layers, num_stages=2, split_points=["3"])
    [['0', '1', '2'], ['3']]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.pipelining import (
    PipelineStage,
    Schedule1F1B,
    ScheduleGPipe,
    ScheduleInterleaved1F1B,
)

from deepseek.distributed.base import ProcessGroupStrategy
from deepseek.distributed.grad_norm import clip_grad_norm

SCHEDULES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B, "interleaved": ScheduleInterleaved1F1B}


def flatten_layers(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """``(qualified name, layer)`` in execution order; nested Sequentials are expanded."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            f"pipeline parallelism needs a model that runs as a sequence of layers (an "
            f"nn.Sequential), got {type(model).__name__}; wrap its parts, e.g. "
            "nn.Sequential(model.stem, *model.blocks, model.head)"
        )
    layers: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        qualified = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            layers.extend(flatten_layers(child, f"{qualified}."))
        else:
            layers.append((qualified, child))
    return layers


def split_layers(
    model: nn.Module, num_stages: int, split_points: Sequence[str] | None = None
) -> list[list[str]]:
    """The layer names of each stage. ``split_points``: the first layer of stages 1..n-1;
    without them, stages get consecutive layers of about equal parameter count."""
    layers = flatten_layers(model)
    names = [n for n, _ in layers]
    if num_stages < 1 or num_stages > len(layers):
        raise ValueError(
            f"cannot split {type(model).__name__} ({len(layers)} layers: "
            f"{', '.join(names[:12])}) into {num_stages} pipeline stages"
        )
    if split_points is not None:
        points = list(split_points)
        if len(points) != num_stages - 1:
            raise ValueError(
                f"pipeline split {points} gives {len(points) + 1} stages, but num_stages is "
                f"{num_stages}; give num_stages - 1 split points"
            )
        unknown = [p for p in points if p not in names]
        if unknown:
            raise ValueError(
                f"pipeline split point(s) {unknown} do not match the model: layer names are "
                f"{', '.join(names)}"
            )
        starts = [names.index(p) for p in points]
        if starts != sorted(set(starts)) or starts[0] == 0:
            raise ValueError(
                f"pipeline split points {points} must be distinct layers in execution order, "
                "after the first layer"
            )
    else:
        sizes = [sum(p.numel() for p in layer.parameters()) + 1 for _, layer in layers]
        total, starts, acc = sum(sizes), [], 0
        for i, size in enumerate(sizes):
            boundary = total * (len(starts) + 1) / num_stages
            remaining_layers = len(sizes) - i
            remaining_stages = num_stages - 1 - len(starts)
            if (
                len(starts) < num_stages - 1
                and i > 0
                and (acc + size / 2 > boundary or remaining_layers == remaining_stages)
            ):
                starts.append(i)
            acc += size
    bounds = [0, *starts, len(names)]
    return [names[a:b] for a, b in zip(bounds, bounds[1:])]


class _Stage(nn.Module):
    """The layers of one stage, run in order; state-dict keys are the original names."""

    def __init__(self, layers: list[tuple[str, nn.Module]]) -> None:
        super().__init__()
        self.names = [n for n, _ in layers]
        self.layers = nn.ModuleList(m for _, m in layers)

    def forward(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer(x)
        return x

    def original_key(self, key: str) -> str:
        index, _, rest = key.removeprefix("layers.").partition(".")
        return f"{self.names[int(index)]}.{rest}"

    def local_key(self, key: str) -> str | None:
        for i, name in enumerate(self.names):
            if key.startswith(name + "."):
                return f"layers.{i}.{key[len(name) + 1 :]}"
        return None


class PipelineParallel(nn.Module):
    """Run ``model`` as a pipeline over the ranks of ``group`` (default: all ranks).

    ``step(inputs, target=..., loss_fn=...)`` runs one batch's forward and backward under
    the schedule and returns the batch's mean loss on every rank; calling the module is a
    pipelined forward without gradients whose output every rank receives. Parameters,
    ``state_dict()`` and an optimizer built on ``parameters()`` are this rank's stage's;
    ``full_state_dict()`` gathers the whole model.

    Run under ``torchrun --nproc-per-node 2``::

        pipe = ds.nn.parallel.PipelineParallel(model, num_stages=2, num_microbatches=4,
                                               schedule="1f1b")
        optimizer = torch.optim.SGD(pipe.parameters(), lr=0.1)
        loss = pipe.step(x, target=y, loss_fn=F.cross_entropy)
        optimizer.step()
    """

    def __init__(
        self,
        model: nn.Module,
        num_stages: int | None = None,
        num_microbatches: int = 4,
        schedule: str = "gpipe",
        split_points: Sequence[str] | None = None,
        group: dist.ProcessGroup | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if not dist.is_initialized():
            raise RuntimeError(
                "PipelineParallel needs a process group: call "
                "deepseek.distributed.init_process_group() first (under torchrun)"
            )
        key = schedule.strip().lower() if isinstance(schedule, str) else schedule
        if key not in SCHEDULES:
            raise ValueError(
                f"unknown pipeline schedule {schedule!r}; use one of {', '.join(SCHEDULES)}"
            )
        if (
            isinstance(num_microbatches, bool)
            or not isinstance(num_microbatches, int)
            or num_microbatches < 1
        ):
            raise ValueError(f"num_microbatches must be a positive int, got {num_microbatches!r}")
        self.group = group
        self.world = dist.get_world_size(group)
        self.pp_rank = dist.get_rank(group)
        per_rank = 2 if key == "interleaved" else 1
        num_stages = num_stages if num_stages is not None else self.world * per_rank
        if num_stages != self.world * per_rank:
            raise ValueError(
                f"the {key} schedule runs {per_rank} stage(s) per rank: num_stages must be "
                f"{self.world * per_rank} with {self.world} processes, got {num_stages}"
            )
        self.num_stages = num_stages
        self.num_microbatches = num_microbatches
        self.schedule_name = key
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        split = split_layers(model, num_stages, split_points)
        layers = dict(flatten_layers(model))
        self.stage_ids = [self.pp_rank + k * self.world for k in range(per_rank)]
        self.stages = nn.ModuleList(
            _Stage([(n, layers[n]) for n in split[i]]).to(self.device) for i in self.stage_ids
        )
        self.split = split
        self._loss_fn: Callable[[Any, Any], torch.Tensor] | None = None
        self._schedule_cls = SCHEDULES[key]
        self.schedule: Any = None  # built at the first step, once the shapes are known
        self._register_state_dict_hook(_to_original_keys)
        self._register_load_state_dict_pre_hook(_to_local_keys, with_module=True)

    # -- where this rank sits ----------------------------------------------------------------
    @property
    def is_first(self) -> bool:
        return 0 in self.stage_ids

    @property
    def is_last(self) -> bool:
        return self.num_stages - 1 in self.stage_ids

    def _global_rank(self, pp_rank: int) -> int:
        return dist.get_global_rank(self.group, pp_rank) if self.group is not None else pp_rank

    def _loss(self, output: Any, target: Any) -> torch.Tensor:
        return self._loss_fn(output, target) / self.num_microbatches

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.num_microbatches:
            raise ValueError(
                f"num_microbatches={self.num_microbatches} does not divide the batch of "
                f"{batch_size} samples; use a batch size that is a multiple of it (or drop_last)"
            )

    # -- training ----------------------------------------------------------------------------
    def step(
        self,
        *inputs: torch.Tensor,
        target: torch.Tensor | None = None,
        loss_fn: Callable[[Any, Any], torch.Tensor],
    ) -> torch.Tensor:
        """Forward and backward of one batch (gradients accumulate into ``.grad`` as the
        mean over microbatches); the batch's mean loss, on every rank."""
        batch = inputs[0] if inputs else target
        self.check_batch(batch.shape[0])
        if self.schedule is None:
            self._build(inputs, batch.shape[0] // self.num_microbatches)
        self._loss_fn = loss_fn
        losses: list[torch.Tensor] = []
        kwargs: dict[str, Any] = {}
        if self.is_last:
            kwargs = {"target": target, "losses": losses}
        if self.is_first:
            self.schedule.step(*inputs, **kwargs)
        else:
            self.schedule.step(**kwargs)
        loss = (
            torch.stack([x.detach().float() for x in losses]).sum()  # each is 1/n of its own
            if self.is_last
            else torch.zeros((), dtype=torch.float32)
        )
        if self.world > 1:
            dist.broadcast(loss, src=self._global_rank(self.world - 1), group=self.group)
        return loss

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Clip by the norm over every stage's gradients (the same on every rank)."""
        group = self.group if self.group is not None else dist.group.WORLD
        return clip_grad_norm(self.parameters(), max_norm, group=group)

    def _build(self, inputs: tuple[torch.Tensor, ...], micro: int) -> None:
        """Create torch's stages and schedule with static shapes. torch's own shape
        inference would run each stage's forward in training mode on uninitialised
        tensors (corrupting BatchNorm statistics); here one microbatch runs through the
        stages in eval mode without gradients, and every stage gets its input and output
        shapes as meta tensors."""
        if not inputs:
            raise ValueError("the first step needs the inputs on every rank (to infer shapes)")
        x: Any = inputs[0][:micro] if len(inputs) == 1 else tuple(t[:micro] for t in inputs)
        shapes: dict[int, tuple[Any, Any]] = {}
        modes = [m.training for m in self.modules()]
        self.eval()
        with torch.no_grad():
            for stage_index in range(self.num_stages):
                owner = stage_index % self.world
                before = x
                if owner == self.pp_rank:
                    x = self.stages[self.stage_ids.index(stage_index)](x)
                if self.world > 1:
                    box = [x if owner == self.pp_rank else None]
                    dist.broadcast_object_list(box, src=self._global_rank(owner), group=self.group)
                    x = box[0]
                shapes[stage_index] = (_meta(before, stage_index > 0), _meta(x))
        for module, mode in zip(self.modules(), modes):
            module.training = mode
        self._pipe_stages = [
            PipelineStage(
                stage,
                i,
                self.num_stages,
                self.device,
                input_args=shapes[i][0],
                output_args=shapes[i][1],
                output_grads=shapes[i][1],
                input_grads=None if i == 0 else shapes[i][0],
                group=self.group,
            )  # fmt: skip
            for stage, i in zip(self.stages, self.stage_ids)
        ]
        stage_arg = self._pipe_stages if len(self._pipe_stages) > 1 else self._pipe_stages[0]
        # scale_grads=False: torch would divide *all* of .grad by the microbatch count at
        # the end of a step, including gradients accumulated by earlier steps; the loss is
        # divided per microbatch instead, which is the same for a single step.
        self.schedule = self._schedule_cls(
            stage_arg, n_microbatches=self.num_microbatches, loss_fn=self._loss, scale_grads=False
        )

    # -- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """A forward pass through all stages; every rank returns the output."""
        x: Any = inputs[0] if len(inputs) == 1 else inputs
        for stage_index in range(self.num_stages):
            owner = stage_index % self.world
            if owner == self.pp_rank:
                stage = self.stages[self.stage_ids.index(stage_index)]
                x = stage(x)
            if self.world > 1:
                box = [x if owner == self.pp_rank else None]
                dist.broadcast_object_list(box, src=self._global_rank(owner), group=self.group)
                x = box[0]
        return x

    # -- state -------------------------------------------------------------------------------
    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Every stage's weights under the original model's names, on every rank."""
        local = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        if self.world == 1:
            return local
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, local, group=self.group)
        merged: dict[str, torch.Tensor] = {}
        for part in parts:
            merged.update(part)
        return merged

    def load_full_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        """Load this rank's stage's part of a full (original-named) state dict."""
        own = set(self.state_dict())
        mine = {k: v for k, v in state.items() if k in own}
        missing = sorted(own - set(mine))
        if strict and missing:
            raise ValueError(
                f"the state dict lacks {len(missing)} weight(s) of pipeline stage(s) "
                f"{self.stage_ids}: {missing[:5]}"
            )
        current = self.state_dict()
        bad = [
            f"{k}: {tuple(v.shape)} vs {tuple(current[k].shape)}"
            for k, v in mine.items()
            if tuple(v.shape) != tuple(current[k].shape)
        ]
        if bad:
            raise ValueError(f"the state dict does not fit the model: {'; '.join(bad[:5])}")
        self.load_state_dict(mine, strict=False)

    def original_name(self, name: str) -> str:
        """``stages.0.layers.1.weight`` -> the original model's ``blocks.1.weight``."""
        index, _, inner = name.removeprefix("stages.").partition(".")
        return self.stages[int(index)].original_key(inner)

    def extra_repr(self) -> str:
        return (
            f"stages={self.stage_ids} of {self.num_stages}, microbatches={self.num_microbatches}, "
            f"schedule={self.schedule_name!r}"
        )


def _meta(value: Any, requires_grad: bool = True) -> Any:
    """Shape and dtype of ``value`` (a tensor or tuple of tensors) as meta tensors;
    floating-point ones marked as carrying gradients (the stages exchange those)."""
    if isinstance(value, torch.Tensor):
        meta = torch.empty_like(value, device="meta")
        return meta.requires_grad_(requires_grad and meta.is_floating_point())
    return tuple(_meta(v, requires_grad) for v in value)


def _to_original_keys(module: PipelineParallel, state: dict, prefix: str, local: Any) -> None:
    for key in list(state):
        rest = key[len(prefix) :]
        if rest.startswith("stages."):
            index, _, inner = rest.removeprefix("stages.").partition(".")
            stage = module.stages[int(index)]
            state[prefix + stage.original_key(inner)] = state.pop(key)


def _to_local_keys(module: PipelineParallel, state: dict, prefix: str, *args: Any) -> None:
    for key in list(state):
        rest = key[len(prefix) :]
        for i, stage in enumerate(module.stages):
            local = stage.local_key(rest)
            if local is not None:
                state[f"{prefix}stages.{i}.{local}"] = state.pop(key)
                break


class PipelineStrategy(ProcessGroupStrategy):
    """The ``pipeline`` strategy: the model's layers split over all ranks, each batch run
    as ``num_microbatches`` microbatches under ``schedule``.

    The Trainer's batch is the pipeline's batch (every rank loads the same data: stage 0
    reads the inputs, the last stage the targets); the loss comes from ``loss_fn``.
    Checkpoints hold the whole model (gathered from every stage), so they load with any
    number of stages.

    >>> PipelineStrategy(num_microbatches=4, schedule="1f1b")
    PipelineStrategy(num_microbatches=4, schedule='1f1b', split_points=None)
    """

    name = "pipeline"

    def __init__(
        self,
        *,
        num_microbatches: int = 4,
        schedule: str = "gpipe",
        split_points: list[str] | None = None,
        num_stages: int | None = None,
        timeout_s: float | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__(timeout_s=timeout_s, backend=backend)
        if schedule not in SCHEDULES:
            raise ValueError(
                f"unknown pipeline schedule {schedule!r}; use one of {', '.join(SCHEDULES)}"
            )
        self.num_microbatches = num_microbatches
        self.schedule = schedule
        self.split_points = split_points
        self.num_stages = num_stages
        self._pipe: PipelineParallel | None = None

    def setup_model(self, model: nn.Module) -> nn.Module:
        self._require_group()
        self._require_trainable(model, "pipeline")
        if hasattr(model, "module") and hasattr(model.module, "training_step"):
            raise TypeError(
                "the pipeline strategy computes the loss on the last stage with loss_fn; "
                "models with training_step are not supported: pass loss_fn= to the Trainer"
            )
        self._pipe = PipelineParallel(
            model,
            num_stages=self.num_stages,
            num_microbatches=self.num_microbatches,
            schedule=self.schedule,
            split_points=self.split_points,
            device=self.device,
        )
        return self._pipe

    def setup_dataloader(self, loader, *, shuffle: bool, seed: int, drop_last: bool | None = None):
        """Every stage reads the same batches (one data-parallel replica). For training
        (the Trainer passes ``drop_last``), a last batch smaller than the others is
        dropped with a warning: the stages exchange microbatches of one fixed shape.
        Evaluation loaders (no ``drop_last``) keep every sample: their forward does not
        run the schedule."""
        import warnings

        from deepseek.training.data import EpochSampler, rebuild_dataloader

        size, batch = len(loader.dataset), loader.batch_size
        if drop_last is not None and batch is not None and batch % self.num_microbatches:
            raise ValueError(
                f"num_microbatches={self.num_microbatches} does not divide the batch size "
                f"{batch}; use a batch size that is a multiple of it"
            )
        training = drop_last is not None
        drop_last = bool(drop_last)
        if training and not drop_last and batch and size % batch:
            warnings.warn(
                f"the pipeline strategy drops the last {size % batch} sample(s) of each epoch: "
                f"{size} samples do not fill batches of {batch}, and pipeline stages exchange "
                "microbatches of one fixed shape",
                stacklevel=2,
            )
            drop_last = True
        sampler = EpochSampler(
            size, shuffle=shuffle, seed=seed, num_replicas=1, rank=0, drop_last=drop_last
        )
        rebuilt = rebuild_dataloader(loader, sampler)
        if drop_last and not rebuilt.drop_last:
            from torch.utils.data import DataLoader

            rebuilt = DataLoader(
                rebuilt.dataset, batch_size=batch, sampler=sampler, drop_last=True,
                num_workers=rebuilt.num_workers, collate_fn=rebuilt.collate_fn,
                pin_memory=rebuilt.pin_memory, worker_init_fn=rebuilt.worker_init_fn,
                generator=rebuilt.generator,
            )  # fmt: skip
        return rebuilt

    def forward_backward(
        self,
        trainer: Any,
        batch: Any,
        batch_idx: int,
        *,
        loss_divisor: int = 1,
        sync_gradients: bool = True,
    ) -> torch.Tensor:
        """The batch's microbatches through the schedule; each microbatch loss is scaled
        by 1/loss_divisor (gradient accumulation), torch scales by 1/num_microbatches."""
        if trainer.loss_fn is None:
            raise ValueError("the pipeline strategy needs loss_fn= (the last stage computes it)")
        if not (isinstance(batch, (list, tuple)) and len(batch) >= 2):
            raise ValueError("the pipeline strategy needs (inputs, target) batches")
        inputs, target = tuple(batch[:-1]), batch[-1]
        loss_fn = trainer.loss_fn

        def scaled(output: Any, tgt: Any) -> torch.Tensor:
            return loss_fn(output, tgt) / loss_divisor

        with trainer.precision.autocast():
            loss = self._pipe.step(*inputs, target=target, loss_fn=scaled)
        return loss * loss_divisor

    def clip_gradients(self, model: nn.Module, max_norm: float, optimizers=None) -> torch.Tensor:
        return self._pipe.clip_grad_norm_(max_norm)

    # -- checkpoints: the whole model, gathered from every stage --------------------------------
    def model_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return self._pipe.full_state_dict()

    def load_model_state_dict(
        self, model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True
    ) -> None:
        self._pipe.load_full_state_dict(state, strict=strict)

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Every stage's optimizer state keyed by the original parameter names."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        local = get_optimizer_state_dict(self._pipe, optimizer, options=StateDictOptions())
        rename = self._pipe.original_name
        local = {
            "state": {rename(k): v for k, v in local["state"].items()},
            "param_groups": [
                {**g, "params": [rename(k) for k in g["params"]]} for g in local["param_groups"]
            ],
        }
        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, local)
        merged: dict[str, Any] = {"state": {}, "param_groups": []}
        for part in parts:
            merged["state"].update(part["state"])
            for i, group in enumerate(part["param_groups"]):
                if i < len(merged["param_groups"]):
                    merged["param_groups"][i]["params"] = (
                        merged["param_groups"][i]["params"] + group["params"]
                    )
                else:
                    merged["param_groups"].append(dict(group))
        return merged

    def load_optimizer_state_dict(
        self, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        local = {self._pipe.original_name(n): n for n, _ in self._pipe.named_parameters()}
        mine = {
            "state": {local[k]: v for k, v in state["state"].items() if k in local},
            "param_groups": [
                {**g, "params": [local[p] for p in g["params"] if p in local]}
                for g in state["param_groups"]
            ],
        }
        set_optimizer_state_dict(self._pipe, optimizer, mine, options=StateDictOptions())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_microbatches={self.num_microbatches}, "
            f"schedule={self.schedule!r}, split_points={self.split_points!r})"
        )
