"""The knowledge-distillation loss (Hinton et al., 2015)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class DistillationLoss(nn.Module):
    """``alpha * T² * KL(teacher_T || student_T) + (1 - alpha) * CE(student, target)``.

    ``teacher_T``/``student_T`` are the softmax of the logits divided by the
    ``temperature`` T; the T² factor keeps the soft term's gradients on the scale of the
    hard one. The KL is averaged over samples (``batchmean``), the cross-entropy over
    samples too. Logits have the classes on the last dimension (``(N, C)`` or
    ``(N, L, C)`` for sequences, with ``target`` of shape ``(N,)`` or ``(N, L)``).
    The teacher's logits are detached: gradients reach the student only.

    >>> import torch
    >>> loss_fn = DistillationLoss(temperature=2.0, alpha=0.5)
    >>> student, teacher = torch.randn(4, 10, requires_grad=True), torch.randn(4, 10)
    >>> loss = loss_fn(student, teacher, torch.tensor([1, 0, 3, 9]))
    >>> loss.backward()
    >>> student.grad.shape
    torch.Size([4, 10])
    """

    def __init__(self, temperature: float = 2.0, alpha: float = 0.5) -> None:
        super().__init__()
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise TypeError(f"temperature must be a number, got {type(temperature).__name__}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise TypeError(f"alpha must be a number, got {type(alpha).__name__}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(
                f"alpha weighs the teacher term against the labels and must be in [0, 1], "
                f"got {alpha!r}"
            )
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        target: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(
                f"student logits {tuple(student_logits.shape)} and teacher logits "
                f"{tuple(teacher_logits.shape)} must have the same shape"
            )
        classes = student_logits.shape[-1]
        student = student_logits.reshape(-1, classes)
        teacher = teacher_logits.detach().reshape(-1, classes)
        t = self.temperature
        soft = F.kl_div(
            F.log_softmax(student / t, dim=-1),
            F.log_softmax(teacher / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        ) * (t * t)
        if self.alpha == 1.0:
            return soft
        if target is None:
            raise ValueError(
                f"alpha={self.alpha} gives the labels a weight of {1 - self.alpha}: pass the "
                "target, or use alpha=1.0 to distil from the teacher alone"
            )
        if target.shape != student_logits.shape[:-1]:
            raise ValueError(
                f"target shape {tuple(target.shape)} does not match the logits "
                f"{tuple(student_logits.shape)} (expected {tuple(student_logits.shape[:-1])})"
            )
        hard = F.cross_entropy(student, target.reshape(-1))
        return self.alpha * soft + (1.0 - self.alpha) * hard

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}"
