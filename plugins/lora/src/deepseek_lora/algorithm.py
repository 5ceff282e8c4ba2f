"""LoRA: low-rank adapters on ``nn.Linear`` layers, as a DeepSeek algorithm.

``Lora(rank, alpha, target_modules, ...).apply(model)`` replaces every ``nn.Linear``
whose module name matches one of ``target_modules`` by a :class:`LoraLinear` (the same
frozen weight and bias plus trainable ``lora_A`` and ``lora_B``), and freezes every other
parameter except the modules named in ``trainable``. :func:`merge` folds the adapters
back into plain ``nn.Linear`` weights for export.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> x = torch.randn(3, 4)
>>> before = model(x)
>>> model = Lora(rank=2, alpha=4, target_modules=["0", "2"]).apply(model)
>>> torch.equal(model(x), before)  # lora_B starts at zero: same outputs
True
>>> sorted(n for n, p in model.named_parameters() if p.requires_grad)
['0.lora_A', '0.lora_B', '2.lora_A', '2.lora_B']
>>> merged = merge(model)
>>> any(isinstance(m, LoraLinear) for m in merged.modules())
False
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from deepseek.config import ConfigError

__all__ = ["Lora", "LoraError", "LoraLinear", "lora_state_dict", "match_modules", "merge"]


class LoraError(ConfigError):
    """A bad LoRA option or target pattern (a ``ValueError``; the message says the fix)."""


class LoraLinear(nn.Linear):
    """``y = x W^T + b + (alpha / rank) * dropout(x) A^T B^T``.

    It *is* an ``nn.Linear`` holding the original ``weight`` and ``bias`` (the same
    parameter objects, frozen, under the same state-dict keys) plus ``lora_A``
    (``rank x in_features``, Kaiming-uniform) and ``lora_B`` (``out_features x rank``,
    zeros), so a fresh adapter computes exactly what the base layer computed.

    >>> import torch
    >>> base = torch.nn.Linear(4, 3)
    >>> layer = LoraLinear(base, rank=2, alpha=4)
    >>> x = torch.randn(5, 4)
    >>> torch.equal(layer(x), base(x)), layer.scaling
    (True, 2.0)
    >>> layer.weight is base.weight, layer.weight.requires_grad, layer.lora_A.requires_grad
    (True, False, True)
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        nn.Module.__init__(self)  # take base's parameters as they are: nothing reallocated
        if not isinstance(base, nn.Linear):
            raise LoraError(f"LoraLinear wraps an nn.Linear, got a {type(base).__name__}")
        if isinstance(base, LoraLinear):
            raise LoraError("this layer already has a LoRA adapter; merge() it first")
        _check_rank_alpha_dropout(rank, alpha, dropout)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.rank, self.alpha = int(rank), float(alpha)
        self.scaling = self.alpha / self.rank
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(self.rank, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, self.rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return F.linear(x, self.weight, self.bias) + update * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """``(alpha / rank) * B @ A``, computed in float32 and cast to the weight's dtype."""
        with torch.no_grad():
            delta = self.lora_B.float() @ self.lora_A.float() * self.scaling
        return delta.to(self.weight.dtype)

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing what this layer computes (in eval mode)."""
        factory = {"device": self.weight.device, "dtype": self.weight.dtype}
        linear = nn.Linear(
            self.in_features, self.out_features, bias=self.bias is not None, **factory
        )
        with torch.no_grad():
            linear.weight.copy_(self.weight + self.delta_weight())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        linear.weight.requires_grad_(self.weight.requires_grad)
        if self.bias is not None:
            linear.bias.requires_grad_(self.bias.requires_grad)
        return linear

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha:g}"


def _check_rank_alpha_dropout(rank: Any, alpha: Any, dropout: Any) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise LoraError(f"lora: rank must be a positive integer (e.g. 8), got {rank!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise LoraError(
            f"lora: alpha must be a positive number (the update is scaled by alpha / rank; "
            f"alpha = 2 * rank is common), got {alpha!r}"
        )
    if not math.isfinite(alpha):
        raise LoraError(f"lora: alpha must be finite, got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise LoraError(f"lora: dropout must be a probability in [0, 1), got {dropout!r}")


def _patterns(value: Any, option: str, *, allow_empty: bool) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(p, str) and p.strip() for p in value
    ):
        raise LoraError(
            f"lora: {option} must be a list of module-name patterns such as "
            f"['*.query', '*.value'], got {value!r}"
        )
    if not value and not allow_empty:
        raise LoraError(
            f"lora: {option} is empty; name the nn.Linear layers to adapt, e.g. "
            "['*.query', '*.value']"
        )
    return tuple(p.strip() for p in value)


def _matches(name: str, pattern: str) -> bool:
    """A glob over the full dotted name or any dotted suffix of it: ``query`` and
    ``*.query`` both match ``bert.encoder.layer.0.attention.self.query``."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, "*." + pattern)


def _no_match_message(
    pattern: str, names: Sequence[str], option: str, model: nn.Module, kind: str
) -> str:
    linear_names = [n for n in names if n]
    leaves = sorted({n.rsplit(".", 1)[-1] for n in linear_names})
    bare = pattern.rsplit(".", 1)[-1].strip("*?[]")
    close = difflib.get_close_matches(bare, leaves, n=5, cutoff=0.5)
    close += [
        n
        for n in difflib.get_close_matches(pattern, linear_names, n=3, cutoff=0.6)
        if n not in close
    ]
    hint = f"close names: {', '.join(map(repr, close))}" if close else "no close name"
    examples = ", ".join(repr(n) for n in linear_names[:6])
    return (
        f"lora: {option} pattern {pattern!r} matches no module of {type(model).__name__} "
        f"({hint}); patterns are globs over dotted module names or their suffixes, and its "
        f"modules are named like {examples}"
    )


def match_modules(
    model: nn.Module,
    patterns: Iterable[str],
    option: str = "target_modules",
    kind: type[nn.Module] | None = None,
) -> list[str]:
    """Names of ``model``'s modules (of type ``kind`` if given) matching any pattern.

    Every pattern must match at least one such module, else one :class:`LoraError`
    lists every bad pattern with the close names.

    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    >>> match_modules(net, ["1.*"], kind=nn.Linear)
    ['1.0']
    """
    patterns = tuple(patterns)
    named = [(n, m) for n, m in model.named_modules() if n]
    candidates = [n for n, m in named if kind is None or isinstance(m, kind)]
    found: list[str] = []
    problems: list[str] = []
    for pattern in patterns:
        hits = [n for n in candidates if _matches(n, pattern)]
        if hits:
            found += [n for n in hits if n not in found]
            continue
        matched = [(n, m) for n, m in named if _matches(n, pattern)]
        if matched:
            kind_name = kind.__name__ if kind is not None else "module"
            others = "; ".join(f"{n!r} is a {type(m).__name__}" for n, m in matched[:3])
            inside = [
                f"{n}.{c}"
                for n, m in matched
                for c, sub in m.named_modules()
                if c and kind is not None and isinstance(sub, kind)
            ]
            fix = (
                f"target the {kind_name} layers inside, e.g. {inside[0]!r}"
                if inside
                else f"LoRA adapts {kind_name} layers only"
            )
            problems.append(
                f"lora: {option} pattern {pattern!r} matches no {kind_name} ({others}); {fix}"
            )
        else:
            kind_name = kind.__name__ if kind is not None else "module"
            problems.append(_no_match_message(pattern, candidates, option, model, kind_name))
    if problems:
        raise LoraError("\n".join(problems))
    return found


class Lora:
    """Low-rank adapters (LoRA) on the ``nn.Linear`` layers named by ``target_modules``.

    Args:
        rank: the adapters' rank ``r`` (``A`` is ``r x in``, ``B`` is ``out x r``).
        alpha: the update is scaled by ``alpha / rank``.
        target_modules: glob patterns over dotted module names (or their suffixes):
            ``["*.query", "*.value"]``, ``["query"]``, ``["encoder.layer.*.output.dense"]``.
            Every pattern must match at least one ``nn.Linear``.
        dropout: dropout on the adapters' input (the base path is unchanged).
        trainable: patterns of modules kept trainable (e.g. ``["classifier"]``); every
            other parameter except the adapters is frozen.

    ``apply(model)`` changes ``model`` in place and returns it. In a config::

        algorithms:
          - {name: lora, rank: 8, alpha: 16, target_modules: ["*.query", "*.value"],
             trainable: [classifier]}

    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    >>> model = Lora(rank=2, alpha=2, target_modules="0", trainable=["1"]).apply(model)
    >>> sorted(n for n, p in model.named_parameters() if p.requires_grad)
    ['0.lora_A', '0.lora_B', '1.bias', '1.weight']
    """

    def __init__(
        self,
        rank: int = 8,
        alpha: float = 16,
        target_modules: Sequence[str] | str = ("*.query", "*.value"),
        dropout: float = 0.0,
        trainable: Sequence[str] | str = (),
    ) -> None:
        _check_rank_alpha_dropout(rank, alpha, dropout)
        self.rank, self.alpha, self.dropout = rank, alpha, float(dropout)
        self.target_modules = _patterns(target_modules, "target_modules", allow_empty=False)
        self.trainable = _patterns(trainable, "trainable", allow_empty=True)

    def apply(self, model: nn.Module) -> nn.Module:
        """Wrap the matching Linear layers in place, freeze the rest; returns ``model``."""
        if not isinstance(model, nn.Module):
            raise LoraError(f"lora: apply() takes an nn.Module, got a {type(model).__name__}")
        targets = match_modules(model, self.target_modules, "target_modules", kind=nn.Linear)
        already = [n for n in targets if isinstance(model.get_submodule(n), LoraLinear)]
        if already:
            raise LoraError(
                f"lora: {already[0]!r} already has a LoRA adapter; merge(model) before "
                "applying LoRA again"
            )
        keep = match_modules(model, self.trainable, "trainable") if self.trainable else []
        for param in model.parameters():
            param.requires_grad_(False)
        for name in targets:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            setattr(
                parent,
                child,
                LoraLinear(getattr(parent, child), self.rank, self.alpha, self.dropout),
            )
        for name in keep:
            for param in model.get_submodule(name).parameters():
                param.requires_grad_(True)
        for module in model.modules():
            if isinstance(module, LoraLinear):
                module.lora_A.requires_grad_(True)
                module.lora_B.requires_grad_(True)
        return model

    def __repr__(self) -> str:
        return (
            f"Lora(rank={self.rank}, alpha={self.alpha}, target_modules="
            f"{list(self.target_modules)}, dropout={self.dropout}, "
            f"trainable={list(self.trainable)})"
        )


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into a plain ``nn.Linear`` (``W + alpha/rank * B @ A``), in
    place; returns ``model`` with no LoRA modules left, ready for export.

    >>> import torch
    >>> from torch import nn
    >>> model = Lora(rank=1, alpha=1, target_modules="0").apply(nn.Sequential(nn.Linear(3, 3)))
    >>> type(merge(model)[0]).__name__
    'Linear'
    """
    if isinstance(model, LoraLinear):
        return model.merged()
    names = [n for n, m in model.named_modules() if isinstance(m, LoraLinear)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, getattr(parent, child).merged())
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the trainable tensors (the adapters and the modules kept trainable): what a
    LoRA fine-tune adds to its base checkpoint. Load it with
    ``model.load_state_dict(sd, strict=False)`` into a model given the same ``Lora``.

    >>> from torch import nn
    >>> model = Lora(rank=1, alpha=1, target_modules="0").apply(nn.Sequential(nn.Linear(3, 3)))
    >>> sorted(lora_state_dict(model))
    ['0.lora_A', '0.lora_B']
    """
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k in trainable}
