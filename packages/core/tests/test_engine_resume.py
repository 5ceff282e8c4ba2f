"""Bit-exact resume from every kind of checkpoint (issue 12, item 0), with dropout and
shuffling: epoch end, after validation, ``last``, step ``save_freq`` (mid-epoch and on an
epoch's last batch), through the Python API and through ``deepseek train``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from deepseek.callbacks import Callback, ModelCheckpoint
from deepseek.training import Trainer

EPOCHS = 3  # 6 batches per epoch: 18 steps


def make_data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(48, 8, generator=g), torch.randint(0, 3, (48,), generator=g))


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3))


class SaveAfterValidation(Callback):
    """Writes a checkpoint right after each validation (a 'best model' style save)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def on_validation_end(self, trainer):
        if trainer.stage == "fit":
            trainer.save_checkpoint(self.root / f"val-step_{trainer.global_step}")


def run(root: Path, max_epochs: int, callbacks=(), resume=None, **kwargs) -> nn.Module:
    model = make_model()
    trainer = Trainer(
        model, torch.optim.AdamW, {"lr": 0.01}, train_data=make_data(), val_data=make_data(),
        batch_size=8, loss_fn=nn.functional.cross_entropy, max_epochs=max_epochs, seed=0,
        precision="fp32", enable_progress_bar=False, default_root_dir=root,
        scheduler=torch.optim.lr_scheduler.StepLR, scheduler_kwargs={"step_size": 4},
        callbacks=list(callbacks), **kwargs,
    )  # fmt: skip
    trainer.fit(resume=resume)
    return model


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    return run(tmp_path_factory.mktemp("ref"), EPOCHS).state_dict()


@pytest.fixture(scope="module")
def reference_step_val(tmp_path_factory) -> dict[str, torch.Tensor]:
    root = tmp_path_factory.mktemp("ref_steps")
    return run(root, EPOCHS, val_every_n_steps=4).state_dict()


def assert_same(expected: dict, model: nn.Module) -> None:
    actual = model.state_dict()
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


@pytest.mark.parametrize(
    "kind, callbacks, checkpoint, first_epochs",
    [
        ("epoch end", lambda d: [ModelCheckpoint(d / "{epoch}")], "1", EPOCHS),
        ("last", lambda d: [ModelCheckpoint(d / "{epoch}", save_last=True)], "last", 2),
        ("after validation", lambda d: [SaveAfterValidation(d)], "val-step_6", EPOCHS),
        ("step, mid-epoch", lambda d: [ModelCheckpoint(d / "s{step}", save_freq=4)], "s8", 3),
        ("step, epoch end", lambda d: [ModelCheckpoint(d / "s{step}", save_freq=3)], "s6", 3),
    ],
)
def test_resume_is_bitwise_identical(
    tmp_path, reference, kind, callbacks, checkpoint, first_epochs
):
    ckpt_dir = tmp_path / "ck"
    run(tmp_path, first_epochs, callbacks(ckpt_dir))
    resumed = run(tmp_path / "resumed", EPOCHS, resume=ckpt_dir / checkpoint)
    assert_same(reference, resumed)


def test_resume_after_a_step_validation_at_an_epoch_end(tmp_path, reference_step_val):
    # val_every_n_steps=4 validates at step 12, the end of epoch 2: the checkpoint written
    # after that validation must neither repeat it nor shift the RNG.
    ckpt_dir = tmp_path / "ck"
    run(tmp_path, EPOCHS, [SaveAfterValidation(ckpt_dir)], val_every_n_steps=4)
    for name in ("val-step_8", "val-step_12"):
        resumed = run(tmp_path / name, EPOCHS, resume=ckpt_dir / name, val_every_n_steps=4)
        assert_same(reference_step_val, resumed)


def test_stop_after_epochs_then_continue_with_more_epochs(tmp_path, reference):
    # The recipe: train 2 epochs, then ask for 3 and resume from 'last'.
    run(tmp_path, EPOCHS - 1, [ModelCheckpoint(save_freq="epoch", save_last=True)])
    resumed = run(tmp_path, EPOCHS, [ModelCheckpoint(save_freq="epoch")], resume="last")
    assert_same(reference, resumed)


JOB = textwrap.dedent(
    """
    seed: 0
    output_dir: {out}
    model: {{name: "resume_job:build", dropout: 0.3}}
    data:
      train: {{name: "resume_job:data"}}
      val: {{name: "resume_job:data"}}
      batch_size: 8
    optimizer: {{name: AdamW, lr: 0.01}}
    trainer: {{max_epochs: 4, precision: fp32, loss: cross_entropy}}
    callbacks:
      - {{name: model_checkpoint, save_last: true}}
    """
)

MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    def build(dropout):
        return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 3))

    def data():
        g = torch.Generator().manual_seed(0)
        return TensorDataset(torch.randn(40, 8, generator=g),
                             torch.randint(0, 3, (40,), generator=g))
    """
)


def _train(config: Path, *overrides: str) -> None:
    cmd = [sys.executable, "-m", "deepseek.cli", "train", str(config)]
    for item in overrides:
        cmd += ["--set", item]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=config.parent)
    assert done.returncode == 0, done.stdout + done.stderr


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    from deepseek.checkpoint import load_checkpoint

    return load_checkpoint(out / "checkpoints" / "last").model_state


def test_cli_resume_from_an_epoch_end_checkpoint_is_bitwise_identical(tmp_path):
    (tmp_path / "resume_job.py").write_text(MODULE)
    for name in ("full", "split"):
        (tmp_path / f"{name}.yaml").write_text(JOB.format(out=tmp_path / name))
    _train(tmp_path / "full.yaml")
    _train(tmp_path / "split.yaml", "trainer.max_epochs=2")
    _train(tmp_path / "split.yaml", "trainer.max_epochs=4", "trainer.resume=last")
    expected, actual = _final_weights(tmp_path / "full"), _final_weights(tmp_path / "split")
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
