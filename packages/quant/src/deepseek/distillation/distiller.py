"""The ``distillation`` algorithm: a student trained against a frozen teacher, on the
teacher's softened outputs and, optionally, its intermediate features."""

from __future__ import annotations

import difflib
import os
import sys
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


def _student_module_attr(student: nn.Module, module_name: str, attr: str) -> Any:
    """``module_name:attr`` when ``module_name`` is the module the student's class came
    from (as a job config loaded it, possibly under a private name), else None."""
    loaded = type(student).__module__
    if loaded != module_name and not loaded.endswith(f"_{module_name}"):
        return None
    obj: Any = sys.modules.get(loaded)
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    return obj


def build_teacher(spec: Any, student: nn.Module) -> nn.Module:
    """The teacher a config describes, with its trained weights, frozen.

    ``spec`` is a module, a checkpoint path, or a mapping: ``checkpoint`` (a checkpoint
    directory, ``<run>/checkpoints/best`` or ``last``, or a ``.safetensors`` file; read
    without unpickling), optional ``name`` (a registered model, a ``torch``/``deepseek``
    target, or a ``module:callable`` from the student's own module; by default the
    student's class), optional ``example_shape`` (when the checkpoint is itself pruned),
    and the constructor's keyword arguments. A name from anywhere else is refused: a
    distillation option never imports code the config did not already run.

    >>> import tempfile, torch
    >>> from deepseek.checkpoint import save_checkpoint
    >>> trained = torch.nn.Linear(4, 3)
    >>> path = save_checkpoint(tempfile.mkdtemp() + "/t", trained.state_dict())
    >>> teacher = build_teacher({"checkpoint": str(path), "in_features": 4,
    ...                          "out_features": 3}, torch.nn.Linear(4, 3))
    >>> torch.equal(teacher.weight, trained.weight), teacher.training
    (True, False)
    """
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        spec = {"checkpoint": spec}
    if not isinstance(spec, Mapping):
        raise TypeError(
            "teacher must be a model, a checkpoint path, or a mapping such as "
            f"{{checkpoint: runs/train/checkpoints/best}}; got {type(spec).__name__}"
        )
    options = dict(spec)
    checkpoint = options.pop("checkpoint", None) or options.pop("weights", None)
    if checkpoint is None:
        raise ValueError(
            "teacher needs its trained weights: checkpoint: <run>/checkpoints/best (a "
            "checkpoint directory or a .safetensors file)"
        )
    name = options.pop("name", None)
    example_shape = options.pop("example_shape", None)
    factory = _teacher_factory(name, student)
    try:
        teacher = factory(**options)
    except TypeError as exc:
        raise ValueError(f"teacher: cannot build {name or type(student).__name__}: {exc}") from None
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher: {name!r} built a {type(teacher).__name__}, not a model")
    from deepseek.pruning.resize import load_into

    example = torch.randn(*example_shape) if example_shape is not None else None
    load_into(teacher, checkpoint, example_inputs=example)
    return teacher.requires_grad_(False).eval()


def _teacher_factory(name: str | None, student: nn.Module) -> Any:
    if name is None:
        return type(student)
    from deepseek.plugins import registry

    models = registry("model")
    if ":" not in name:
        if name not in models:
            known = ", ".join(models.names()) or "(none installed)"
            raise ValueError(f"teacher.name: unknown model {name!r}; registered models: {known}")
        return lambda **kwargs: models.create(name, **kwargs)
    module_name, _, attr = name.partition(":")
    if module_name.split(".")[0] in ("torch", "deepseek"):
        from deepseek.config import import_target

        return import_target(name, "teacher.name")
    found = _student_module_attr(student, module_name, attr)
    if found is None:
        raise ValueError(
            f"teacher.name {name!r}: a teacher is a registered model, a torch/deepseek "
            f"target, or a class from the student's own module ({type(student).__module__}); "
            "a distillation option does not import other code"
        )
    return found


class Distillation:
    """``apply(student)`` wraps the student with this teacher in a :class:`Distiller`.

    ``teacher`` is a model, or (from a config) a checkpoint path or mapping that
    :func:`build_teacher` turns into one when the algorithm is applied: by default the
    student's own class, rebuilt with the given keyword arguments and loaded with the
    checkpoint's weights (``teacher: {checkpoint: runs/train/checkpoints/best,
    channels: 32}``), which is how a pruned student learns from its unpruned self.

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
        teacher: nn.Module | str | os.PathLike | Mapping[str, Any],
        temperature: float = 2.0,
        alpha: float = 0.5,
        features: Mapping[str, str] | None = None,
        feature_loss: str = "mse",
        feature_weight: float = 1.0,
    ):
        if not isinstance(teacher, (nn.Module, str, os.PathLike, Mapping)):
            raise TypeError(
                "teacher must be a model, a checkpoint path or a mapping with a checkpoint, "
                f"got {type(teacher).__name__}"
            )
        weights = teacher
        if isinstance(teacher, Mapping):
            weights = teacher.get("checkpoint") or teacher.get("weights")
            if not weights:
                raise ValueError(
                    "teacher needs its trained weights: checkpoint: <run>/checkpoints/best"
                )
        if not isinstance(teacher, nn.Module):
            from deepseek.pruning.resize import resolve_weights_path

            resolve_weights_path(weights)  # a missing checkpoint fails now, not after setup
        self.teacher = teacher
        self.criterion = DistillationLoss(temperature=temperature, alpha=alpha)
        self.features = dict(features or {})
        self.feature_loss = feature_loss
        self.feature_weight = feature_weight

    def apply(self, student: nn.Module) -> Distiller:
        return Distiller(
            student,
            build_teacher(self.teacher, student),
            self.criterion,
            self.features,
            self.feature_loss,
            self.feature_weight,
        )

    def __repr__(self) -> str:
        what = type(self.teacher).__name__ if isinstance(self.teacher, nn.Module) else "spec"
        return f"Distillation(teacher={what}, {self.criterion.extra_repr()})"
