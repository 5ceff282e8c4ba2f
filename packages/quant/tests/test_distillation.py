"""The distillation loss against a hand computation, and the Distiller."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import deepseek as ds
from deepseek.distillation import Distillation, DistillationLoss, Distiller
from deepseek.plugins import registry


def by_hand(student, teacher, target, temperature, alpha):
    p_teacher = torch.softmax(teacher / temperature, dim=-1)
    log_p_student = torch.log_softmax(student / temperature, dim=-1)
    kl = (p_teacher * (p_teacher.log() - log_p_student)).sum(-1).mean() * temperature**2
    ce = -torch.log_softmax(student, dim=-1)[torch.arange(len(target)), target].mean()
    return alpha * kl + (1 - alpha) * ce


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_loss_equals_the_hand_computation(temperature: float, alpha: float) -> None:
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 6, 5, generator=generator)
    target = torch.randint(0, 5, (6,), generator=generator)
    loss = DistillationLoss(temperature=temperature, alpha=alpha)(student, teacher, target)
    expected = by_hand(student, teacher, target, temperature, alpha)
    torch.testing.assert_close(loss, expected)


def test_sequence_logits_are_flattened_over_positions() -> None:
    generator = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(2, 3, 4, 7, generator=generator)
    target = torch.randint(0, 7, (3, 4), generator=generator)
    loss = DistillationLoss(temperature=2.0, alpha=0.5)(student, teacher, target)
    expected = by_hand(student.reshape(12, 7), teacher.reshape(12, 7), target.reshape(12), 2.0, 0.5)
    torch.testing.assert_close(loss, expected)


def test_gradient_reaches_the_student_only() -> None:
    torch.manual_seed(0)
    student, teacher = nn.Linear(4, 3), nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    loss = DistillationLoss()(student(x), teacher(x), y)  # teacher logits carry a graph
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_distiller_trains_the_student_against_a_frozen_teacher() -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Linear(16, 3))
    student = nn.Linear(4, 3)
    distiller = (
        registry("algorithm").create("distillation", teacher=teacher, alpha=0.8).apply(student)
    )
    assert isinstance(distiller, Distiller)
    distiller.train()
    assert student.training and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    torch.testing.assert_close(distiller(x), student(x))
    expected = DistillationLoss(alpha=0.8)(student(x), teacher(x), y)
    loss = distiller.loss((x, y))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert student.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


def test_the_trainer_fits_a_distiller() -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    distiller = Distillation(teacher, temperature=2.0, alpha=1.0).apply(nn.Linear(4, 3))
    x = torch.randn(64, 4)
    data = TensorDataset(x, torch.zeros(64, dtype=torch.long))
    with torch.no_grad():
        before = distiller.loss(x).item()
    trainer = ds.Trainer(
        distiller, torch.optim.Adam, optimizer_kwargs={"lr": 0.05}, train_data=data,
        batch_size=16, max_epochs=5, seed=0, enable_progress_bar=False, default_root_dir=None,
    )  # fmt: skip
    trainer.fit()
    with torch.no_grad():
        after = distiller.loss(x).item()
    assert after < 0.5 * before
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key])


def test_bad_input_gives_one_clear_error() -> None:
    loss = DistillationLoss(alpha=0.5)
    with pytest.raises(ValueError, match="same shape"):
        loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="pass the target"):
        loss(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="target shape"):
        loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        DistillationLoss(temperature=0)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        DistillationLoss(alpha=1.5)
    with pytest.raises(TypeError, match="temperature must be a number"):
        DistillationLoss(temperature="2")
    layer = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="different modules"):
        Distillation(layer).apply(layer)
    with pytest.raises(TypeError, match="teacher must be a model, a checkpoint path"):
        Distillation(3)
    with pytest.raises(FileNotFoundError, match="resnet18 does not exist"):
        Distillation("resnet18")
    with pytest.raises(ValueError, match="needs its trained weights"):
        Distillation({"name": "resnet18"})
    with pytest.raises(TypeError, match="distillation batch"):
        Distillation(nn.Linear(2, 2)).apply(layer).loss({"x": torch.zeros(1, 2)})


def _mlp(width: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Linear(8, width), torch.nn.ReLU(), torch.nn.Linear(width, 3)
    )


def test_feature_matching_with_projection_trains_student_and_projection() -> None:
    from deepseek.distillation import Distillation

    torch.manual_seed(0)
    teacher, student = _mlp(32), _mlp(16)
    distiller = Distillation(
        teacher, alpha=0.5, features={"0": "0"}, feature_loss="mse", feature_weight=2.0
    ).apply(student)
    assert isinstance(distiller.projections["0"], torch.nn.Linear)
    x, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    loss = distiller.loss((x, y))
    # Equals the output loss plus the weighted MSE between projected and teacher features.
    with torch.no_grad():
        expected_features = torch.nn.functional.mse_loss(
            distiller.projections["0"](student[0](x)), teacher[0](x)
        )
        output_only = distiller.criterion(student(x), teacher(x), y)
    assert torch.allclose(loss, output_only + 2.0 * expected_features, atol=1e-6)
    opt = torch.optim.SGD(distiller.parameters(), lr=0.1)
    loss.backward()
    opt.step()
    assert distiller.projections["0"].weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_is_not_saved_with_the_student() -> None:
    from deepseek.distillation import Distillation

    distiller = Distillation(_mlp(32), features={"0": "0"}).apply(_mlp(16))
    keys = distiller.state_dict().keys()
    assert not any(k.startswith("teacher.") for k in keys)
    assert any(k.startswith("student.") for k in keys)


def test_cosine_feature_loss_on_conv_features_uses_1x1_projection() -> None:
    from deepseek.distillation import Distillation

    teacher = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3)
    )
    student = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3)
    )
    x = torch.randn(2, 1, 6, 6)
    teacher(x), student(x)
    distiller = Distillation(teacher, features={"0": "0"}, feature_loss="cosine").apply(student)
    assert isinstance(distiller.projections["0"], torch.nn.Conv2d)
    assert torch.isfinite(distiller.loss((x, torch.tensor([0, 1]))))


def test_unknown_feature_layer_lists_close_names() -> None:
    from deepseek.distillation import Distillation

    with pytest.raises(ValueError, match="no layer named '00'.*Did you mean '0'"):
        Distillation(_mlp(32), features={"00": "0"}).apply(_mlp(16))


class Net(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Linear(4, width)
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


def test_teacher_from_a_checkpoint_spec(tmp_path) -> None:
    """As a config gives it: the student's class rebuilt with options, trained weights
    loaded from a checkpoint, frozen, and kept out of the distiller's state."""
    from deepseek.checkpoint import save_checkpoint

    trained = Net(width=16)
    path = save_checkpoint(tmp_path / "teacher", trained.state_dict())
    distiller = Distillation({"checkpoint": str(path), "width": 16}).apply(Net(width=4))
    teacher = distiller.teacher
    assert teacher.body.out_features == 16 and not teacher.training
    assert torch.equal(teacher.head.weight, trained.head.weight)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(k.startswith("student.") for k in distiller.state_dict())
    with pytest.raises(ValueError, match="does not import other code"):
        Distillation({"checkpoint": str(path), "name": "os:system"}).apply(Net())
    with pytest.raises(ValueError, match="cannot build Linear"):
        Distillation({"checkpoint": str(path), "width": 16}).apply(nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"do not fit Net \(built with other options"):
        Distillation({"checkpoint": str(path)}).apply(Net())  # width 8, saved 16
