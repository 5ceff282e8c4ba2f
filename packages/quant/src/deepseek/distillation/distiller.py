"""The ``distillation`` algorithm: a student trained against a frozen teacher, on the
teacher's softened outputs and, optionally, its intermediate features."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from deepseek.distillation.loss import DistillationLoss


def _find(model: nn.Module, name: str, role: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"the {role} has no layer named {name!r}.{hint}")
    return modules[name]


def _width(module: nn.Module, name: str) -> tuple[int, int | None]:
    """A layer's output width and its spatial rank (None: features on the last dim)."""
    for conv, rank in ((nn.Conv1d, 1), (nn.Conv2d, 2), (nn.Conv3d, 3)):
        if isinstance(module, conv):
            return module.out_channels, rank
    for norm, rank in ((nn.BatchNorm1d, 1), (nn.BatchNorm2d, 2), (nn.BatchNorm3d, 3)):
        if isinstance(module, norm):
            return module.num_features, rank
    if isinstance(module, nn.Linear):
        return module.out_features, None
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[-1], None
    if isinstance(module, nn.Embedding):
        return module.embedding_dim, None
    raise ValueError(
        f"cannot tell the output width of layer {name!r} ({type(module).__name__}): match "
        "features at a Linear, Conv, BatchNorm, LayerNorm or Embedding layer"
    )


def _projection(student: tuple[int, int | None], teacher: tuple[int, int | None]) -> nn.Module:
    """A learned map from the student's feature width to the teacher's: a 1x1 convolution
    for channel-first features, a linear layer on the last dimension otherwise. Built up
    front, so the optimizer the Trainer creates trains it."""
    (s_width, rank), (t_width, _) = student, teacher
    if s_width == t_width:
        return nn.Identity()
    if rank is not None:
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[rank]
        return conv(s_width, t_width, kernel_size=1)
    return nn.Linear(s_width, t_width)


class Distiller(nn.Module):
    """A student and a frozen teacher, with the distillation loss.

    ``forward`` is the student's forward, so the Distiller predicts like the student.
    ``loss((inputs, target))`` runs both models and returns the
    :class:`DistillationLoss` plus ``feature_weight`` times the feature-matching loss
    (``features`` maps student layer names to teacher layer names; their outputs are
    compared with ``feature_loss`` "mse" or "cosine", through a learned projection where
    the widths differ). It is also the ``training_step`` the DeepSeek Trainer calls, so
    ``Trainer(distiller, ...)`` trains the student (and the projections). The teacher runs
    in eval mode without gradients, moves with ``.to(device)``, and is not part of the
    Distiller's ``state_dict``: checkpoints hold the student and the projections only.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        criterion: DistillationLoss,
        features: Mapping[str, str] | None = None,
        feature_loss: str = "mse",
        feature_weight: float = 1.0,
    ):
        super().__init__()
        for name, module in (("student", student), ("teacher", teacher)):
            if not isinstance(module, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module, got {type(module).__name__}")
        if student is teacher:
            raise ValueError("the student and the teacher must be different modules")
        if feature_loss not in ("mse", "cosine"):
            raise ValueError(f"feature_loss must be 'mse' or 'cosine', got {feature_loss!r}")
        self.student = student
        # Not a registered submodule: the teacher must stay out of the student's checkpoints.
        object.__setattr__(self, "teacher", teacher.requires_grad_(False).eval())
        self.criterion = criterion
        self.features = dict(features or {})
        self.feature_loss = feature_loss
        self.feature_weight = float(feature_weight)
        self.projections = nn.ModuleDict()
        self._captured: dict[str, torch.Tensor] = {}
        self._capturing = False
        for s_name, t_name in self.features.items():
            s_layer, t_layer = _find(student, s_name, "student"), _find(teacher, t_name, "teacher")
            projection = _projection(_width(s_layer, s_name), _width(t_layer, t_name))
            self.projections[s_name.replace(".", "__")] = projection
            s_layer.register_forward_hook(self._capture("s:" + s_name))
            t_layer.register_forward_hook(self._capture("t:" + t_name))

    def _capture(self, key: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self._capturing:  # only inside loss(): plain predictions keep nothing alive
                self._captured[key] = output[0] if isinstance(output, (tuple, list)) else output

        return hook

    def _apply(self, fn: Any, recurse: bool = True) -> Distiller:
        super()._apply(fn, recurse)
        self.teacher._apply(fn, recurse)  # .to(device) / .half() move the teacher too
        return self

    def _feature_term(self) -> torch.Tensor | None:
        total = None
        for s_name, t_name in self.features.items():
            s, t = self._captured.pop("s:" + s_name), self._captured.pop("t:" + t_name)
            s = self.projections[s_name.replace(".", "__")](s)
            if s.shape != t.shape:
                raise ValueError(
                    f"student layer {s_name!r} gives {tuple(s.shape)} after projection but "
                    f"teacher layer {t_name!r} gives {tuple(t.shape)}: pick layers whose "
                    "outputs differ only in width"
                )
            if self.feature_loss == "mse":
                term = nn.functional.mse_loss(s, t)
            else:
                term = (
                    1
                    - nn.functional.cosine_similarity(
                        s.flatten(2) if s.dim() > 2 else s,
                        t.flatten(2) if t.dim() > 2 else t,
                        dim=1,
                    ).mean()
                )
            total = term if total is None else total + term
        return total

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.student(*args, **kwargs)

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()  # dropout/batch-norm of the teacher stay in inference mode
        return self

    def loss(self, batch: Any) -> torch.Tensor:
        """The distillation loss of one ``(inputs, target)`` batch (or bare inputs when
        ``alpha=1``, where labels are not used)."""
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            inputs, target = batch
        elif isinstance(batch, torch.Tensor):
            inputs, target = batch, None
        else:
            raise TypeError(
                "a distillation batch is (inputs, target) or an inputs tensor, got "
                f"{type(batch).__name__}"
            )
        self._capturing = bool(self.features)
        try:
            with torch.no_grad():
                teacher_logits = self.teacher(inputs)
            student_logits = self.student(inputs)
        finally:
            self._capturing = False
        loss = self.criterion(student_logits, teacher_logits, target)
        features = self._feature_term()
        return loss if features is None else loss + self.feature_weight * features

    training_step = loss


class Distillation:
    """``apply(student)`` wraps the student with this teacher in a :class:`Distiller`.

    >>> import torch
    >>> teacher, student = torch.nn.Linear(8, 3), torch.nn.Linear(8, 3)
    >>> distiller = Distillation(teacher, temperature=2.0, alpha=0.7).apply(student)
    >>> loss = distiller.loss((torch.randn(4, 8), torch.tensor([0, 2, 1, 0])))
    >>> loss.backward()
    >>> teacher.weight.grad is None and student.weight.grad is not None
    True
    """

    def __init__(
        self,
        teacher: nn.Module,
        temperature: float = 2.0,
        alpha: float = 0.5,
        features: Mapping[str, str] | None = None,
        feature_loss: str = "mse",
        feature_weight: float = 1.0,
    ):
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
        self.teacher = teacher
        self.criterion = DistillationLoss(temperature=temperature, alpha=alpha)
        self.features = dict(features or {})
        self.feature_loss = feature_loss
        self.feature_weight = feature_weight

    def apply(self, student: nn.Module) -> Distiller:
        return Distiller(
            student,
            self.teacher,
            self.criterion,
            self.features,
            self.feature_loss,
            self.feature_weight,
        )

    def __repr__(self) -> str:
        return f"Distillation(teacher={type(self.teacher).__name__}, {self.criterion.extra_repr()})"
