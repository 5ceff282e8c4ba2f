"""The ``distillation`` algorithm: a student trained against a frozen teacher."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from deepseek.distillation.loss import DistillationLoss


class Distiller(nn.Module):
    """A student and a frozen teacher, with the distillation loss.

    ``forward`` is the student's forward, so the Distiller predicts like the student.
    ``loss((inputs, target))`` runs both models and returns the
    :class:`DistillationLoss`; it is also the ``training_step`` the DeepSeek Trainer
    calls, so ``Trainer(distiller, ...)`` trains the student. The teacher stays in eval
    mode with ``requires_grad=False`` (it is a submodule so ``.to(device)`` moves it,
    and it appears in ``state_dict`` under ``teacher.``); export ``distiller.student``.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, criterion: DistillationLoss):
        super().__init__()
        for name, module in (("student", student), ("teacher", teacher)):
            if not isinstance(module, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module, got {type(module).__name__}")
        if student is teacher:
            raise ValueError("the student and the teacher must be different modules")
        self.student = student
        self.teacher = teacher.requires_grad_(False).eval()
        self.criterion = criterion

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
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        return self.criterion(self.student(inputs), teacher_logits, target)

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

    def __init__(self, teacher: nn.Module, temperature: float = 2.0, alpha: float = 0.5):
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
        self.teacher = teacher
        self.criterion = DistillationLoss(temperature=temperature, alpha=alpha)

    def apply(self, student: nn.Module) -> Distiller:
        return Distiller(student, self.teacher, self.criterion)

    def __repr__(self) -> str:
        return f"Distillation(teacher={type(self.teacher).__name__}, {self.criterion.extra_repr()})"
