"""The Trainer against hand-written PyTorch loops, plus its error messages."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import deepseek as ds
from deepseek.callbacks import Callback, EarlyStopping, LearningRateMonitor
from deepseek.training import Trainer

QUIET = {"enable_progress_bar": False, "default_root_dir": None}


def make_data(n: int = 64, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, :3].sum(1) > 0).long()
    return TensorDataset(x, y)


def make_model(seed: int = 1, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 2))


def hand_loop(model, loader, epochs, lr=0.05, accumulate=1):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(epochs):
        for i, (x, y) in enumerate(loader):
            loss = nn.functional.cross_entropy(model(x), y)
            (loss / accumulate if accumulate > 1 else loss).backward()
            if (i + 1) % accumulate == 0:
                opt.step()
                opt.zero_grad()
    return model


def trainer_for(model, loader, **kwargs) -> Trainer:
    return Trainer(
        model,
        torch.optim.SGD,
        optimizer_kwargs={"lr": kwargs.pop("lr", 0.05), "momentum": 0.9},
        train_data=loader,
        loss_fn=nn.functional.cross_entropy,
        **{"precision": "fp32", **QUIET, **kwargs},
    )


def test_bit_equal_to_hand_written_loop():
    loader = DataLoader(make_data(), batch_size=8, shuffle=False)
    reference = hand_loop(make_model(), loader, epochs=3)
    model = make_model()
    trainer_for(model, loader, max_epochs=3, seed=0).fit()
    for a, b in zip(reference.parameters(), model.parameters()):
        assert torch.equal(a, b)


def test_gradient_accumulation_matches_large_batch():
    data = make_data()
    big = hand_loop(make_model(), DataLoader(data, batch_size=16), epochs=2)
    model = make_model()
    small = DataLoader(data, batch_size=4)
    trainer_for(model, small, max_epochs=2, accumulate_grad_batches=4).fit()
    for a, b in zip(big.parameters(), model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_dataset_plus_batch_size_shuffles_reproducibly():
    def run():
        model = make_model()
        Trainer(
            model,
            torch.optim.AdamW,
            train_data=make_data(),
            batch_size=8,
            loss_fn=nn.functional.cross_entropy,
            max_epochs=2,
            seed=3,
            precision="fp32",
            **QUIET,
        ).fit()
        return torch.cat([p.flatten() for p in model.parameters()])

    assert torch.equal(run(), run())


def test_model_returning_loss_and_training_step():
    class WithLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = make_model()

        def forward(self, x, y):
            return {"loss": nn.functional.cross_entropy(self.net(x), y)}

    class WithStep(WithLoss):
        def training_step(self, batch):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

    for cls in (WithLoss, WithStep):
        model = cls()
        trainer = Trainer(model, torch.optim.SGD, {"lr": 0.1}, make_data(), batch_size=16, **QUIET)
        trainer.fit()
        assert trainer.global_step == 4
        assert trainer.metrics["train_loss"] > 0


def test_validation_metrics_and_predict():
    data = make_data()
    trainer = Trainer(
        make_model(),
        torch.optim.AdamW,
        {"lr": 0.01},
        train_data=data,
        val_data=data,
        batch_size=16,
        loss_fn=nn.functional.cross_entropy,
        metrics=["accuracy"],
        max_epochs=5,
        **QUIET,
    )
    trainer.fit()
    results = trainer.validate()
    assert set(results) == {"val_loss", "val_accuracy"}
    x, y = data.tensors
    logits = trainer.predict(DataLoader(data, batch_size=10))
    assert logits.shape == (64, 2)
    expected_acc = (logits.argmax(1) == y).float().mean().item()
    assert results["val_accuracy"] == pytest.approx(expected_acc)
    expected_loss = nn.functional.cross_entropy(logits, y).item()
    assert results["val_loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_max_steps_scheduler_and_clipping():
    seen = []

    class Record(Callback):
        def on_before_optimizer_step(self, trainer, optimizer):
            seen.append(optimizer.param_groups[0]["lr"])

    trainer = trainer_for(
        make_model(),
        DataLoader(make_data(), batch_size=8),
        max_steps=5,
        scheduler=torch.optim.lr_scheduler.StepLR,
        scheduler_kwargs={"step_size": 2, "gamma": 0.5},
        gradient_clip_norm=0.5,
        callbacks=[Record(), LearningRateMonitor()],
    )
    trainer.fit()
    assert trainer.global_step == 5
    assert seen == pytest.approx([0.05, 0.05, 0.025, 0.025, 0.0125])
    assert trainer.metrics["grad_norm"] >= 0
    assert trainer.metrics["lr"] == pytest.approx(0.0125)


def test_early_stopping_stops():
    data = make_data()
    stopper = EarlyStopping(monitor="val_loss", patience=1, min_delta=1e9)
    trainer = trainer_for(make_model(), DataLoader(data, batch_size=8), max_epochs=20)
    trainer.val_data = data
    trainer.batch_size = 8
    trainer.callbacks.append(stopper)
    trainer.fit()
    assert trainer.current_epoch == 2  # first validation sets best, second stops
    assert stopper.stopped_epoch == 1


def test_fp16_static_and_dynamic_skip_overflow_steps():
    for loss_scale in (128, "dynamic"):
        model = make_model()
        trainer = Trainer(
            model,
            torch.optim.SGD,
            {"lr": 0.01},
            train_data=make_data(16),
            batch_size=8,
            loss_fn=lambda out, y: nn.functional.cross_entropy(out.float(), y) * 1e6,
            precision="fp16-mixed",
            precision_kwargs={"loss_scale": loss_scale, "init_scale": 2.0**16}
            if loss_scale == "dynamic"
            else {"loss_scale": loss_scale},
            max_steps=2,
            **QUIET,
        )
        before = [p.clone() for p in model.parameters()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit()
        # loss * 1e6 * scale overflows fp16 gradients: every step is skipped, nothing moves.
        assert trainer.precision.skipped_steps == 2
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_bf16_mixed_runs_on_tiny_model():
    trainer = trainer_for(
        make_model(), DataLoader(make_data(16), batch_size=8), precision="bf16-mixed", max_steps=2
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit()
    assert trainer.global_step == 2


def test_mixed_precision_trainer_snippet():
    from torch.optim import AdamW

    from deepseek.optim import MixedPrecisionTrainer

    bert_model = nn.Linear(4, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = MixedPrecisionTrainer(
            model=bert_model, optimizer=AdamW, fp16_params={"enable": True, "loss_scale": 128}
        )
    assert isinstance(trainer.optimizer, AdamW)
    backend = trainer.backend
    if torch.float16 in backend.native_autocast_dtypes():
        assert trainer.precision.name == "fp16-mixed"
        assert trainer.precision.static_scale == 128
    else:  # warns once and says what it does instead
        messages = [str(w.message) for w in caught if "fp16" in str(w.message)]
        assert len(messages) == 1 and "instead" in messages[0]
        assert trainer.precision.name in ("bf16-mixed", "fp32")


def test_nan_loss_raise_and_skip():
    def nan_on_second(out, y, calls=[0]):  # noqa: B006 - counts calls across the run
        calls[0] += 1
        loss = nn.functional.cross_entropy(out, y)
        return loss * float("nan") if calls[0] == 2 else loss

    trainer = trainer_for(make_model(), DataLoader(make_data(32), batch_size=8), max_epochs=1)
    trainer.loss_fn = nan_on_second
    with pytest.raises(FloatingPointError, match="between step 0 and step 4 .*on_nan_loss='skip'"):
        trainer.fit()

    skip = trainer_for(
        make_model(), DataLoader(make_data(32), batch_size=8), max_epochs=1, on_nan_loss="skip"
    )
    skip.loss_fn = lambda out, y, c=[0]: nan_on_second(out, y, c)
    with pytest.warns(UserWarning, match="skipping a batch"):
        skip.fit()
    assert skip.nan_losses_skipped == 1 and skip.global_step == 4


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"optimizer": torch.optim.AdamW, "optimizer_kwargs": {"lrr": 1}}, TypeError, "'lrr'"),
        ({"optimizer": "adamw_typo"}, ValueError, "unknown optimizer"),
        ({"optimizer": None}, ValueError, "optimizer is required"),
        ({"strategy": "dpp"}, LookupError, "unknown strategy 'dpp'"),
        ({"precision": "fp8"}, LookupError, "unknown precision"),
        ({"backend": "tpu"}, LookupError, "unknown backend 'tpu'"),
        ({"max_epochs": 0}, ValueError, "max_epochs must be a positive integer"),
        ({"accumulate_grad_batches": 1.5}, ValueError, "accumulate_grad_batches"),
        ({"on_nan_loss": "ignore"}, ValueError, "on_nan_loss"),
        ({"callbacks": [{"patience": 2}]}, ValueError, "needs a 'name' key"),
        ({"callbacks": ["early_stoping"]}, LookupError, "did you mean 'early_stopping'"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    base = {"optimizer": torch.optim.SGD, "optimizer_kwargs": {"lr": 0.1}}
    with pytest.raises(error, match=f"(?i){match}"):
        Trainer(make_model(), **{**base, **kwargs}, **QUIET)


def test_model_returning_no_loss_is_a_clear_error():
    trainer = Trainer(
        make_model(), torch.optim.SGD, {"lr": 0.1}, make_data(), batch_size=8, **QUIET
    )
    with pytest.raises(TypeError, match="takes 1 input.* pass loss_fn= to the Trainer"):
        trainer.fit()
    unlabeled = TensorDataset(torch.randn(8, 6))
    trainer = Trainer(make_model(), torch.optim.SGD, {"lr": 0.1}, unlabeled, batch_size=4, **QUIET)
    with pytest.raises(TypeError, match=r"returned a Tensor of shape \(4, 2\), not a loss"):
        trainer.fit()


def test_dataset_without_batch_size_and_empty_data():
    with pytest.raises(ValueError, match="batch_size=N"):
        Trainer(make_model(), torch.optim.SGD, {"lr": 0.1}, make_data(), **QUIET).fit()
    empty = TensorDataset(torch.zeros(0, 6), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="no batches"):
        Trainer(make_model(), torch.optim.SGD, {"lr": 0.1}, empty, batch_size=4, **QUIET).fit()


def test_top_level_aliases():
    assert ds.Trainer is Trainer
    assert ds.MixedPrecisionTrainer is ds.optim.MixedPrecisionTrainer


def test_compile_and_gradient_checkpointing_options_train_the_same_model():
    loader = DataLoader(make_data(), batch_size=8, shuffle=False)
    reference = make_model()
    trainer_for(reference, loader, max_epochs=1).fit()
    model = make_model()
    trainer = trainer_for(
        model,
        loader,
        max_epochs=1,
        compile={"backend": "aot_eager"},
        gradient_checkpointing=nn.Linear,
    )
    trainer.fit()
    assert trainer.model is not model  # the compiled wrapper
    # Checkpoints hold the user's module: same keys as the uncompiled model.
    state = trainer.strategy.model_state_dict(trainer.model)
    assert set(state) == set(reference.state_dict())
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-6)
