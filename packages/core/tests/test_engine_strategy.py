"""The Trainer's extension points (Strategy hooks, wrapper types) and the issue-7 defects:
unwrap by type, teardown, no host sync per micro-batch, FP32Precision, accumulation aliases,
no duplicate validation at coinciding steps."""

from __future__ import annotations

import copy
import csv
import gc

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, TensorDataset

from deepseek.callbacks import CSVLogger
from deepseek.checkpoint import load_weights
from deepseek.nn.wrappers import unwrap
from deepseek.training import (
    BF16MixedPrecision,
    FP16MixedPrecision,
    FP32Precision,
    Precision,
    SingleDeviceStrategy,
    Strategy,
    Trainer,
)

QUIET = {"enable_progress_bar": False, "default_root_dir": None, "precision": "fp32"}


def make_data(n: int = 64, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, (x[:, :3].sum(1) > 0).long())


def make_model(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2))


class MicrobatchStrategy(SingleDeviceStrategy):
    """Owns the step like a pipeline schedule: splits each batch into microbatches and runs
    forward and backward per microbatch, weighting each loss by its share of the batch."""

    def __init__(self, chunks: int) -> None:
        super().__init__()
        self.chunks = chunks
        self.microbatches = 0
        self.clipped = 0
        self.stepped = 0

    def forward_backward(self, trainer, batch, batch_idx, *, loss_divisor=1, sync_gradients=True):
        inputs, target = batch
        total = torch.zeros(())
        n = inputs.shape[0]
        for x, y in zip(inputs.chunk(self.chunks), target.chunk(self.chunks)):
            loss = self.training_step(trainer, (x, y), batch_idx) * (x.shape[0] / n)
            self.backward(trainer, loss / loss_divisor)
            total += loss.detach()
            self.microbatches += 1
        trainer.observe_loss(total)
        return total

    def clip_gradients(self, model, max_norm, optimizers=None):
        self.clipped += 1
        return super().clip_gradients(model, max_norm, optimizers)

    def optimizer_step(self, trainer, optimizer):
        self.stepped += 1
        return super().optimizer_step(trainer, optimizer)


def test_a_strategy_running_its_own_microbatches_matches_single_process():
    data = make_data()
    reference = make_model()
    Trainer(
        reference, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}, train_data=data,
        batch_size=16, loss_fn=nn.functional.cross_entropy, max_epochs=3, seed=0,
        gradient_clip_norm=1.0, accumulate_grad_batches=2, **QUIET,
    ).fit()  # fmt: skip
    model = make_model()
    strategy = MicrobatchStrategy(chunks=4)
    trainer = Trainer(
        model, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}, train_data=data,
        batch_size=16, loss_fn=nn.functional.cross_entropy, max_epochs=3, seed=0,
        gradient_clip_norm=1.0, accumulate_grad_batches=2, strategy=strategy, **QUIET,
    )  # fmt: skip
    trainer.fit()
    assert strategy.microbatches == 3 * 4 * 4  # epochs x batches x chunks
    assert strategy.clipped == strategy.stepped == trainer.global_step == 6
    for a, b in zip(reference.parameters(), model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # The loss the strategy returns is the batch's loss: same as single-process logging.
    assert isinstance(trainer.metrics["train_loss"], float)


class ModelWithModuleAttribute(nn.Module):
    """A user model whose attribute happens to be called ``module`` (not a wrapper)."""

    def __init__(self) -> None:
        super().__init__()
        self.module = nn.Linear(6, 2)
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        return self.head(self.module(x))

    def training_step(self, batch):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)


def test_a_model_attribute_named_module_is_not_unwrapped(tmp_path):
    model = ModelWithModuleAttribute()
    assert unwrap(model) is model
    assert unwrap(torch.compile(model)) is model
    trainer = Trainer(
        model, torch.optim.SGD, {"lr": 0.1}, train_data=make_data(), batch_size=16,
        max_epochs=1, **{**QUIET, "default_root_dir": tmp_path},
    )  # fmt: skip
    assert trainer.unwrapped_model is model  # keeps its training_step
    trainer.fit()
    path = trainer.save_checkpoint(tmp_path / "ckpt")
    fresh = ModelWithModuleAttribute()
    load_weights(fresh, path)  # every weight, not only self.module's
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name


def test_strategies_register_their_wrapper_types():
    class ShardWrapper(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.wrapped = inner

    class WrappingStrategy(SingleDeviceStrategy):
        def setup_model(self, model):
            return ShardWrapper(super().setup_model(model))

    Strategy.register_wrapper_type(ShardWrapper, "wrapped")
    model = make_model()
    trainer = Trainer(model, torch.optim.SGD, {"lr": 0.1}, strategy=WrappingStrategy(), **QUIET)
    assert trainer.unwrapped_model is model
    with pytest.raises(TypeError, match="needs a class"):
        Strategy.register_wrapper_type("ShardWrapper", "wrapped")


class RecordingStrategy(SingleDeviceStrategy):
    def __init__(self, log):
        super().__init__()
        self.log = log

    def teardown(self):
        self.log.append("teardown")


def test_strategy_teardown_runs_after_a_failure_and_at_collection():
    log: list[str] = []

    def exploding(output, target):
        raise RuntimeError("boom")

    trainer = Trainer(
        make_model(), torch.optim.SGD, {"lr": 0.1}, train_data=make_data(), batch_size=16,
        loss_fn=exploding, strategy=RecordingStrategy(log), **QUIET,
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit()
    assert log == ["teardown"]
    del trainer
    gc.collect()
    assert log == ["teardown"]  # once only

    ok = Trainer(
        make_model(), torch.optim.SGD, {"lr": 0.1}, train_data=make_data(), batch_size=16,
        loss_fn=nn.functional.cross_entropy, strategy=RecordingStrategy(log), **QUIET,
    )  # fmt: skip
    ok.fit()
    ok.validate(make_data(16))  # still usable after fit
    assert log == ["teardown"]
    del ok
    gc.collect()
    assert log == ["teardown", "teardown"]


class CountHostSyncs(TorchDispatchMode):
    """Counts reads of a tensor's value on the host (``.item()``, ``bool(t)``, ...)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_no_host_sync_per_micro_batch_and_nan_still_raises():
    data = DataLoader(make_data(64), batch_size=4)  # 16 micro-batches per epoch
    trainer = Trainer(
        make_model(), torch.optim.SGD, {"lr": 0.1}, train_data=data,
        loss_fn=nn.functional.cross_entropy, max_epochs=2, **QUIET,
    )  # fmt: skip
    with CountHostSyncs() as counter:
        trainer.fit()
    assert trainer.global_step == 32
    assert counter.count <= 2 * 3, f"{counter.count} host reads for 32 micro-batches"

    calls = [0]

    def nan_at_fifth(output, target):
        calls[0] += 1
        loss = nn.functional.cross_entropy(output, target)
        return loss * float("nan") if calls[0] == 5 else loss

    bad = Trainer(
        make_model(), torch.optim.SGD, {"lr": 0.1}, train_data=data, loss_fn=nan_at_fifth,
        max_epochs=2, **QUIET,
    )  # fmt: skip
    with pytest.raises(FloatingPointError, match=r"between step 0 and step 16 \(epoch 0\)"):
        bad.fit()


def test_reading_train_loss_checks_the_deferred_nan_flag():
    seen = []

    class ReadLoss(CSVLogger):
        def on_train_batch_end(self, trainer, outputs, batch, batch_idx):
            seen.append(trainer.metrics["train_loss"])

    def nan_at_third(output, target, calls=[0]):  # noqa: B006
        calls[0] += 1
        loss = nn.functional.cross_entropy(output, target)
        return loss * float("inf") if calls[0] == 3 else loss

    trainer = Trainer(
        make_model(), torch.optim.SGD, {"lr": 0.1}, train_data=make_data(), batch_size=4,
        loss_fn=nan_at_third, callbacks=[ReadLoss()], **QUIET,
    )  # fmt: skip
    with pytest.raises(FloatingPointError, match="at step 2"):
        trainer.fit()
    assert len(seen) == 2


def test_fp32_precision_is_its_own_class():
    assert FP32Precision is not Precision
    assert not isinstance(BF16MixedPrecision(), FP32Precision)
    assert not isinstance(FP16MixedPrecision(), FP32Precision)
    trainer = Trainer(make_model(), torch.optim.SGD, {"lr": 0.1}, **QUIET)
    assert type(trainer.precision) is FP32Precision


def test_accumulation_alias_conflict_is_one_error_and_alias_warns():
    with pytest.raises(ValueError, match="accumulate_grad_batches=2 and gradient_acc"):
        Trainer(
            make_model(), torch.optim.SGD, {"lr": 0.1}, accumulate_grad_batches=2,
            gradient_accumulation_steps=4, **QUIET,
        )  # fmt: skip
    with pytest.warns(DeprecationWarning, match="accumulate_grad_batches"):
        trainer = Trainer(
            make_model(), torch.optim.SGD, {"lr": 0.1}, gradient_accumulation_steps=4, **QUIET
        )
    assert trainer.accumulate_grad_batches == 4


def test_step_and_epoch_validation_at_the_same_step_log_one_row(tmp_path):
    logger = CSVLogger(tmp_path, log_every_n_steps=1000)
    trainer = Trainer(
        make_model(), torch.optim.SGD, {"lr": 0.1}, train_data=make_data(64), batch_size=16,
        val_data=make_data(16, seed=1), loss_fn=nn.functional.cross_entropy, max_epochs=2,
        val_every_n_steps=2, callbacks=[logger], **{**QUIET, "default_root_dir": tmp_path},
    )  # fmt: skip
    trainer.fit()
    with open(tmp_path / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("val_loss")]
    assert steps == [2, 4, 6, 8]


def test_deepcopy_and_pickling_of_a_trained_model_still_work(tmp_path):
    model = ModelWithModuleAttribute()
    Trainer(
        model, torch.optim.SGD, {"lr": 0.1}, train_data=make_data(), batch_size=16, **QUIET
    ).fit()
    copy.deepcopy(model)
    torch.save(model, tmp_path / "model.pt")  # the attached self.log is picklable
