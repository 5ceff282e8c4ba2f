"""Channel pruning that physically shrinks a model (algorithm ``prune``).

Removing an output channel of a convolution also removes everything that depends on it:
the following BatchNorm's entry, the next layer's input channel, and every channel tied
to it by residual adds, concatenations or group convolutions. Finding those couplings is
a dependency-graph problem over the traced model; Torch-Pruning's DepGraph solves it for
arbitrary architectures, so this module wraps it instead of special-casing model classes
(see the package README for why it was chosen over a hand-written tracer).

Importance is the L1 norm of each coupled group of channels (the weights of the layer,
its BatchNorm and the consumers' input slices), so channels whose weights are all zero are
removed first and the model's output does not change.
"""

from __future__ import annotations

import copy
import difflib
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

PRUNABLE_ROOTS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class PruneReport:
    """Parameters, FLOPs and CPU latency of a model before and after pruning."""

    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    latency_ms_before: float | None = None
    latency_ms_after: float | None = None

    @property
    def param_ratio(self) -> float:
        return self.params_after / max(self.params_before, 1)

    @property
    def speedup(self) -> float | None:
        if not self.latency_ms_before or not self.latency_ms_after:
            return None
        return self.latency_ms_before / self.latency_ms_after

    def __str__(self) -> str:
        rows = [
            ("parameters", f"{self.params_before:,}", f"{self.params_after:,}"),
            ("FLOPs", f"{self.flops_before:,}", f"{self.flops_after:,}"),
        ]
        if self.latency_ms_before is not None and self.latency_ms_after is not None:
            before, after = self.latency_ms_before, self.latency_ms_after
            rows.append(("CPU latency (ms)", f"{before:.3f}", f"{after:.3f}"))
        width = max(len(r[0]) for r in rows)
        lines = [f"{'':<{width}}  {'before':>14}  {'after':>14}"]
        lines += [f"{name:<{width}}  {a:>14}  {b:>14}" for name, a, b in rows]
        return "\n".join(lines)


def check_amount(amount: Any, *, name: str = "amount") -> float:
    """``amount`` as a float in (0, 1), or one clear error."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise TypeError(f"{name} must be a fraction like 0.5, got {type(amount).__name__}")
    if not (math.isfinite(amount) and 0.0 < amount < 1.0):
        raise ValueError(
            f"{name} is the fraction of channels to remove and must lie in (0, 1); got {amount!r}"
        )
    return float(amount)


def _torch_pruning():
    try:
        import torch_pruning
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise ImportError(
            "physical channel pruning needs the torch-pruning package: "
            "pip install 'deepseek-quant[pruning]'"
        ) from exc
    return torch_pruning


def _as_tuple(example_inputs: Any) -> tuple[Any, ...]:
    if example_inputs is None:
        raise ValueError(
            "example_inputs is required: pruning traces the model once to find which channels "
            "are coupled, e.g. prune(model, amount=0.5, example_inputs=torch.randn(1, 3, 32, 32))"
        )
    return example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)


def _resolve_modules(model: nn.Module, names: Iterable[str], what: str) -> list[nn.Module]:
    modules = dict(model.named_modules())
    found = []
    for name in names:
        if name not in modules:
            close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"{what} {name!r} is not a submodule of the model.{hint}")
        found.append(modules[name])
    return found


def output_layers(model: nn.Module, example_inputs: tuple[Any, ...]) -> list[nn.Module]:
    """The prunable layers whose output *is* the model's output (a classifier head): their
    output channels are the model's interface, so they are never pruned."""
    produced: dict[int, nn.Module] = {}
    alive: list[torch.Tensor] = []  # keeps ids unique while the forward runs

    def remember(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            alive.append(output)
            # Hooks fire innermost first: the layer that made the tensor, not its container.
            produced.setdefault(id(output), module)

    handles = [m.register_forward_hook(remember) for m in model.modules()]
    try:
        with torch.no_grad():
            outputs = model(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    flat = outputs if isinstance(outputs, (tuple, list)) else [outputs]
    if isinstance(outputs, dict):
        flat = list(outputs.values())
    return [
        produced[id(t)]
        for t in flat
        if isinstance(t, torch.Tensor) and isinstance(produced.get(id(t)), PRUNABLE_ROOTS)
    ]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure_latency_ms(
    model: nn.Module, example_inputs: tuple[Any, ...], *, repeats: int = 20, warmup: int = 3
) -> float:
    """Median wall time of one forward pass, in milliseconds."""
    was_training = model.training
    model.eval()
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(*example_inputs)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    model.train(was_training)
    times.sort()
    return 1000.0 * times[len(times) // 2]


def prune(
    model: nn.Module,
    amount: float = 0.5,
    example_inputs: Any = None,
    *,
    global_pruning: bool = False,
    layer_amounts: dict[str, float] | None = None,
    protected: Sequence[str] = (),
    round_to: int | None = None,
    inplace: bool = False,
    measure: bool = False,
) -> nn.Module:
    """Remove the ``amount`` fraction of channels with the lowest L1 norm, physically.

    Every Conv/Linear layer loses ``amount`` of its output channels (``global_pruning=True``
    ranks channels across layers instead; ``layer_amounts`` sets ratios per layer name),
    together with everything coupled to them. Layers named in ``protected`` and the layers
    that produce the model's output keep all their channels. Returns the pruned model (a
    copy unless ``inplace=True``); its ``pruning_report`` attribute holds a
    :class:`PruneReport` (with CPU latency when ``measure=True``).

    >>> import torch
    >>> from deepseek.pruning import prune
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
    ...     torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
    ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))
    >>> small = prune(model, amount=0.5, example_inputs=torch.randn(1, 3, 8, 8))
    >>> small[0].out_channels, small[1].num_features, small[3].in_channels, small[7].out_features
    (8, 8, 8, 10)
    >>> small.pruning_report.param_ratio < 0.35
    True
    """
    amount = check_amount(amount)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inputs = _as_tuple(example_inputs)
    tp = _torch_pruning()
    target = model if inplace else copy.deepcopy(model)
    was_training = target.training
    target.eval()

    ignored = _resolve_modules(target, protected, "protected layer")
    ignored += [m for m in output_layers(target, inputs) if m not in ignored]
    ratios = {}
    for name, ratio in (layer_amounts or {}).items():
        (module,) = _resolve_modules(target, [name], "layer_amounts key")
        ratios[module] = check_amount(ratio, name=f"layer_amounts[{name!r}]")
    if not any(isinstance(m, PRUNABLE_ROOTS) and m not in ignored for m in target.modules()):
        raise ValueError(
            f"{type(model).__name__} has no Conv/Linear layer left to prune once the protected "
            "and output layers are excluded"
        )

    flops_before, params_before = tp.utils.count_ops_and_params(target, inputs)
    latency_before = measure_latency_ms(target, inputs) if measure else None
    reference_shape = _output_shapes(target, inputs)

    pruner = tp.pruner.MetaPruner(
        target,
        inputs,
        importance=tp.importance.GroupMagnitudeImportance(p=1),
        global_pruning=global_pruning,
        pruning_ratio=amount,
        pruning_ratio_dict=ratios or None,
        ignored_layers=ignored,
        round_to=round_to,
    )
    pruner.step()

    if _output_shapes(target, inputs) != reference_shape:  # pragma: no cover - guarded above
        raise RuntimeError("pruning changed the model's output shape; protect its output layer")
    flops_after, params_after = tp.utils.count_ops_and_params(target, inputs)
    latency_after = measure_latency_ms(target, inputs) if measure else None
    target.train(was_training)
    target.pruning_report = PruneReport(
        int(params_before),
        int(params_after),
        int(flops_before),
        int(flops_after),
        latency_before,
        latency_after,
    )
    return target


def _output_shapes(model: nn.Module, inputs: tuple[Any, ...]) -> Any:
    with torch.no_grad():
        out = model(*inputs)
    return torch.utils._pytree.tree_map(
        lambda t: tuple(t.shape) if isinstance(t, torch.Tensor) else t, out
    )


class ChannelPruning:
    """The ``prune`` algorithm: physical L1 channel pruning for configs and callbacks.

    ``apply(model)`` returns the pruned copy. ``example_shape`` (e.g. ``[1, 1, 8, 8]``)
    gives the shape of a random example input when none is passed, so YAML can name it.
    ``init_from`` (a checkpoint directory, ``<run>/checkpoints/best``/``last``, or a
    ``.safetensors`` file) loads trained weights before pruning, so the L1 ranking is of
    the trained channels: how a config prunes the model an earlier run trained.

    >>> import torch
    >>> from deepseek.plugins import registry
    >>> pruning = registry("algorithm").create("prune", amount=0.5, example_shape=[1, 8])
    >>> small = pruning.apply(torch.nn.Sequential(
    ...     torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)))
    >>> small[0].out_features, small[2].in_features
    (16, 16)
    """

    def __init__(
        self,
        amount: float = 0.5,
        *,
        example_shape: Sequence[int] | None = None,
        global_pruning: bool = False,
        protected: Sequence[str] = (),
        round_to: int | None = None,
        inplace: bool = False,
        init_from: str | None = None,
    ) -> None:
        self.amount = check_amount(amount)
        self.init_from = init_from
        self.example_shape = tuple(example_shape) if example_shape is not None else None
        self.global_pruning = global_pruning
        self.protected = tuple([protected] if isinstance(protected, str) else protected)
        self.round_to = round_to
        self.inplace = inplace

    def apply(self, model: nn.Module, example_inputs: Any = None) -> nn.Module:
        if example_inputs is None and self.example_shape is not None:
            example_inputs = torch.randn(*self.example_shape)
        inplace = self.inplace
        if self.init_from is not None:
            from deepseek.pruning.resize import load_into

            if not inplace:
                model, inplace = copy.deepcopy(model), True
            load_into(model, self.init_from, example_inputs=example_inputs)
        return prune(
            model,
            self.amount,
            example_inputs,
            global_pruning=self.global_pruning,
            protected=self.protected,
            round_to=self.round_to,
            inplace=inplace,
        )

    def __repr__(self) -> str:
        return f"ChannelPruning(amount={self.amount}, global_pruning={self.global_pruning})"
