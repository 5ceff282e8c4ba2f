"""The Trainer as users expect it (issue 14) and its up-front errors (issue 12, item 10):
the step contract, logging, several optimizers, best/last checkpoint workflows, SIGINT,
notices on stderr, and one clear error per bad input."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from deepseek.callbacks import Callback, CSVLogger, EarlyStopping, ModelCheckpoint
from deepseek.checkpoint import load_weights
from deepseek.training import Trainer
from deepseek.training.data import EpochSampler

QUIET = {"enable_progress_bar": False, "default_root_dir": None, "precision": "fp32"}


def make_data(n: int = 32, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, (x[:, :3].sum(1) > 0).long())


def make_model(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2))


# -- the step contract and logging ----------------------------------------------------------


class LightningStyle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = make_model()
        self.seen_idx: list[int] = []

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        self.seen_idx.append(batch_idx)
        x, y = batch
        logits = self(x)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log("lr_free_metric", 2.0, on_epoch=True)
        return {"loss": nn.functional.cross_entropy(logits, y), "acc": acc}

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_custom", (logits.argmax(-1) == y).float().mean(), prog_bar=True)
        return nn.functional.cross_entropy(logits, y)


def test_training_step_with_batch_idx_dict_extras_and_self_log():
    model = LightningStyle()
    trainer = Trainer(
        model, torch.optim.SGD, {"lr": 0.1}, train_data=make_data(), val_data=make_data(16, 1),
        batch_size=8, max_epochs=2, **QUIET,
    )  # fmt: skip
    trainer.fit()
    assert model.seen_idx == [0, 1, 2, 3] * 2
    metrics = trainer.metrics
    assert {"train_loss", "train_acc", "lr_free_metric", "lr_free_metric_epoch"} <= set(metrics)
    assert {"val_loss", "val_custom"} <= set(metrics)
    assert metrics["lr_free_metric_epoch"] == 2.0
    assert 0.0 <= metrics["val_custom"] <= 1.0 and "val_custom" in trainer.progress_bar_metrics
    assert "tensor(" not in repr(trainer.metrics)
    # Outside a Trainer: one clear error.
    with pytest.raises(RuntimeError, match="works only while a deepseek Trainer runs"):
        model.training_step(next(iter(DataLoader(make_data(), batch_size=4))), 0)


def test_trainer_log_from_a_callback_and_bad_values():
    class LogSomething(Callback):
        def on_train_batch_end(self, trainer, outputs, batch, batch_idx):
            trainer.log("double_loss", outputs["loss"] * 2)

    trainer = Trainer(
        make_model(), torch.optim.SGD, {"lr": 0.1}, train_data=make_data(), batch_size=8,
        loss_fn=nn.functional.cross_entropy, callbacks=[LogSomething()], **QUIET,
    )  # fmt: skip
    trainer.fit()
    assert trainer.metrics["double_loss"] == pytest.approx(2 * trainer.metrics["train_loss"])
    with pytest.raises(ValueError, match="one-element tensor"):
        trainer.log("vec", torch.ones(3))
    with pytest.raises(TypeError, match="needs a number"):
        trainer.log("s", "high")


def test_one_summary_line_per_epoch_when_not_a_terminal(capsys):
    trainer = Trainer(
        make_model(), torch.optim.SGD, {"lr": 0.1}, train_data=make_data(),
        val_data=make_data(16, 1), batch_size=8, loss_fn=nn.functional.cross_entropy,
        max_epochs=3, **{**QUIET, "enable_progress_bar": True},
    )  # fmt: skip
    trainer.fit()
    lines = [ln for ln in capsys.readouterr().err.splitlines() if " epoch " in ln]
    assert len(lines) == 3
    assert lines[0].startswith("[deepseek] epoch 1/3 step 4:") and "val_loss=" in lines[0]


# -- several optimizers -----------------------------------------------------------------------


class TwoTowers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Linear(6, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.encoder(x)))

    def configure_optimizers(self):
        return [
            torch.optim.SGD(self.encoder.parameters(), lr=0.1),
            torch.optim.Adam(self.head.parameters(), lr=0.01),
        ]


def test_configure_optimizers_returning_several_steps_them_in_order():
    reference = TwoTowers()
    opts = reference.configure_optimizers()
    for x, y in DataLoader(make_data(), batch_size=8):
        nn.functional.cross_entropy(reference(x), y).backward()
        for opt in opts:
            opt.step()
            opt.zero_grad()
    model = TwoTowers()
    trainer = Trainer(
        model, train_data=make_data(), batch_size=8, loss_fn=nn.functional.cross_entropy,
        shuffle=False, **QUIET,
    )  # fmt: skip
    assert len(trainer.optimizers) == 2 and trainer.optimizer is trainer.optimizers[0]
    trainer.fit()
    for a, b in zip(reference.parameters(), model.parameters()):
        assert torch.equal(a, b)


class TinyGAN(nn.Module):
    automatic_optimization = False

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.generator = nn.Linear(4, 6)
        self.discriminator = nn.Linear(6, 1)

    def configure_optimizers(self):
        return [
            torch.optim.SGD(self.generator.parameters(), lr=0.05),
            torch.optim.SGD(self.discriminator.parameters(), lr=0.05),
        ]

    def training_step(self, batch):
        real, _ = batch
        opt_g, opt_d = self.optimizers()
        noise = torch.randn(real.shape[0], 4, generator=torch.Generator().manual_seed(1))
        fake = self.generator(noise)
        bce = nn.functional.binary_cross_entropy_with_logits
        d_loss = bce(self.discriminator(real), torch.ones(real.shape[0], 1)) + bce(
            self.discriminator(fake.detach()), torch.zeros(real.shape[0], 1)
        )
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        g_loss = bce(self.discriminator(fake), torch.ones(real.shape[0], 1))
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        return g_loss


def gan_by_hand(model: TinyGAN, loader: DataLoader) -> None:
    opt_g, opt_d = model.configure_optimizers()
    bce = nn.functional.binary_cross_entropy_with_logits
    for real, _ in loader:
        noise = torch.randn(real.shape[0], 4, generator=torch.Generator().manual_seed(1))
        fake = model.generator(noise)
        d_loss = bce(model.discriminator(real), torch.ones(real.shape[0], 1)) + bce(
            model.discriminator(fake.detach()), torch.zeros(real.shape[0], 1)
        )
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = bce(model.discriminator(fake), torch.ones(real.shape[0], 1))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()


def test_manual_optimization_gan_matches_a_hand_written_loop(tmp_path):
    reference = TinyGAN()
    gan_by_hand(reference, DataLoader(make_data(), batch_size=8))
    model = TinyGAN()
    trainer = Trainer(
        model, train_data=make_data(), batch_size=8, shuffle=False, max_epochs=1, **QUIET
    )
    trainer.fit()
    assert trainer.global_step == 4
    for a, b in zip(reference.parameters(), model.parameters()):
        assert torch.equal(a, b)
    torch.save(model, tmp_path / "gan.pt")  # the attached helpers pickle
    with pytest.raises(RuntimeError, match=r"self.optimizers\(\) works only while"):
        model.optimizers()


def test_unsupported_optimizer_setups_are_short_errors():
    model = TwoTowers()
    shared = [torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(model.parameters())]
    with pytest.raises(ValueError, match="in two of the optimizers"):
        Trainer(model, shared, **QUIET)
    with pytest.raises(TypeError, match=r"list of optimizer instances, got \[SGD, int\]"):
        Trainer(model, [torch.optim.SGD(model.head.parameters(), lr=0.1), 3], **QUIET)
    with pytest.raises(ValueError, match="dynamic loss scale are not supported"):
        Trainer(TwoTowers(), **{**QUIET, "precision": "fp16-mixed"})
    static = Trainer(TwoTowers(), **{**QUIET, "precision": "fp16-mixed"},
                     precision_kwargs={"loss_scale": 128})  # fmt: skip
    assert len(static.optimizers) == 2


# -- checkpoints: best / last / test / predict / resume notice -----------------------------


def test_validate_test_predict_with_best_and_last_checkpoints(tmp_path, capsys):
    cb = ModelCheckpoint(tmp_path / "ck" / "{epoch}", monitor="val_loss", save_top_k=1)
    stop = EarlyStopping(monitor="val_loss", patience=10)
    model = make_model()
    trainer = Trainer(
        model, torch.optim.SGD, {"lr": 0.5}, train_data=make_data(), val_data=make_data(16, 1),
        batch_size=8, loss_fn=nn.functional.cross_entropy, max_epochs=4,
        callbacks=[cb, stop, CSVLogger(tmp_path)],
        **{**QUIET, "default_root_dir": tmp_path},
    )  # fmt: skip
    trainer.fit()
    waited = stop.wait
    best = make_model(seed=5)
    load_weights(best, cb.best_model_path)
    expected = Trainer(best, torch.optim.SGD, {"lr": 0.1}, loss_fn=nn.functional.cross_entropy,
                       batch_size=8, **QUIET).validate(make_data(16, 1))  # fmt: skip
    assert trainer.validate(ckpt_path="best") == expected
    assert "validate: weights from" in capsys.readouterr().err
    scores = trainer.test(make_data(16, 1))
    assert scores == {"test_loss": expected["val_loss"]}
    assert stop.wait == waited  # validate()/test() are not fit validations
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[-1] == "test_loss" and rows[-1].endswith(str(scores["test_loss"]))
    x = make_data(16, 1).tensors[0]
    predicted = trainer.predict(TensorDataset(x), ckpt_path=cb.best_model_path)
    torch.testing.assert_close(predicted, best(x).detach())
    with pytest.raises(FileNotFoundError, match="no (such )?checkpoint"):
        trainer.validate(ckpt_path=tmp_path / "nope")
    bare = Trainer(make_model(), torch.optim.SGD, {"lr": 0.1}, batch_size=8,
                   loss_fn=nn.functional.cross_entropy, **QUIET)  # fmt: skip
    with pytest.raises(FileNotFoundError, match="best"):
        bare.validate(make_data(), ckpt_path="best")


def test_a_resumed_run_says_what_it_resumed_from(tmp_path, capsys):
    def run(epochs, resume=None):
        Trainer(
            make_model(), torch.optim.SGD, {"lr": 0.1}, train_data=make_data(), batch_size=8,
            loss_fn=nn.functional.cross_entropy, max_epochs=epochs, callbacks=[ModelCheckpoint()],
            **{**QUIET, "default_root_dir": tmp_path},
        ).fit(resume=resume)  # fmt: skip

    run(1)
    capsys.readouterr()
    run(2, resume="last")
    err = capsys.readouterr().err
    assert "resumed from" in err and "epoch 1, batch 0, step 4" in err


def test_weights_only_resume_starts_a_fresh_run_from_the_weights(tmp_path):
    first = make_model()
    Trainer(
        first, torch.optim.SGD, {"lr": 0.1}, train_data=make_data(), batch_size=8,
        loss_fn=nn.functional.cross_entropy, callbacks=[ModelCheckpoint(tmp_path / "{epoch}")],
        **{**QUIET, "default_root_dir": tmp_path},
    ).fit()  # fmt: skip
    seen = []

    class FirstWeights(Callback):
        def on_train_epoch_start(self, trainer):
            seen.append(copy.deepcopy(trainer.unwrapped_model.state_dict()))

    again = Trainer(
        make_model(seed=9), torch.optim.Adam, {"lr": 0.01}, train_data=make_data(),
        batch_size=8, loss_fn=nn.functional.cross_entropy, callbacks=[FirstWeights()], **QUIET,
    )  # fmt: skip
    again.fit(resume=tmp_path / "1", resume_weights_only=True)
    assert again.global_step == 4  # a fresh run: step 0 to 4
    for key, value in first.state_dict().items():
        assert torch.equal(seen[0][key], value), key


SIGINT_WORKER = textwrap.dedent(
    """
    import sys, time, torch
    from torch import nn
    from torch.utils.data import TensorDataset
    from deepseek.callbacks import Callback
    from deepseek.training import Trainer
    from safetensors.torch import save_file

    out, resume, slow = sys.argv[1], sys.argv[2], sys.argv[3] == "slow"

    class Announce(Callback):
        def on_train_batch_end(self, trainer, outputs, batch, batch_idx):
            print(f"STEP {trainer.global_step}", flush=True)
            if slow:
                time.sleep(0.2)

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3))
    trainer = Trainer(
        model, torch.optim.AdamW, {"lr": 0.01}, train_data=data, batch_size=8,
        loss_fn=nn.functional.cross_entropy, max_epochs=3, seed=0, precision="fp32",
        enable_progress_bar=False, default_root_dir=out, callbacks=[Announce()],
    )
    trainer.fit(resume=None if resume == "none" else resume)
    save_file(dict(model.state_dict()), out + "/final.safetensors")
    print("DONE", trainer.global_step, trainer.interrupted, flush=True)
    """
)


def test_sigint_finishes_the_step_saves_and_the_run_resumes_bit_exactly(tmp_path):
    from safetensors.torch import load_file

    script = tmp_path / "worker.py"
    script.write_text(SIGINT_WORKER)
    subprocess.run([sys.executable, str(script), str(tmp_path / "ref"), "none", "fast"],
                   check=True, timeout=300, capture_output=True)  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "run"), "none", "slow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    for line in proc.stdout:
        if line.startswith("STEP") and int(line.split()[1]) >= 5:
            os.kill(proc.pid, signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "DONE" in out and out.strip().endswith("True")
    line = next(ln for ln in err.splitlines() if "checkpoint written to" in ln)
    path = line.split("checkpoint written to ")[1].split(". Resume")[0]
    assert "trainer.fit(resume=" in line and os.path.isdir(path)
    stopped = int(path.rsplit("step_", 1)[1])
    assert 5 <= stopped < 24
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), path, "fast"],
                          check=True, timeout=300, capture_output=True, text=True)  # fmt: skip
    assert "DONE 24 False" in done.stdout and "resumed from" in done.stderr
    expected = load_file(str(tmp_path / "ref" / "final.safetensors"))
    actual = load_file(str(tmp_path / "run" / "final.safetensors"))
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


# -- notices for long silent phases ------------------------------------------------------------


def test_compile_and_activation_checkpointing_announce_themselves(capsys):
    blocks = nn.Sequential(*[nn.Sequential(nn.Linear(6, 6), nn.Tanh()) for _ in range(3)])
    Trainer(blocks, torch.optim.SGD, {"lr": 0.1}, gradient_checkpointing=True, **QUIET)
    err = capsys.readouterr().err
    assert "activation checkpointing wraps 3 block(s): 0, 1, 2" in err
    Trainer(make_model(), torch.optim.SGD, {"lr": 0.1}, compile=True, **QUIET)
    assert "one-time cost" in capsys.readouterr().err


# -- one clear error per bad input (issue 12, item 10) -----------------------------------------


def test_loss_fn_errors_are_one_line_each():
    def kwargs(loss_fn):
        return dict(train_data=make_data(), batch_size=8, loss_fn=loss_fn, **QUIET)

    with pytest.raises(TypeError, match=r"cannot be called as loss_fn\(output, target\)"):
        Trainer(make_model(), torch.optim.SGD, {"lr": 0.1}, **kwargs(lambda out: out.sum()))
    with pytest.raises(TypeError, match="pass an instance"):
        Trainer(make_model(), torch.optim.SGD, {"lr": 0.1}, **kwargs(nn.CrossEntropyLoss))
    vector = Trainer(
        make_model(), torch.optim.SGD, {"lr": 0.1},
        **kwargs(lambda out, y: nn.functional.cross_entropy(out, y, reduction="none")),
    )  # fmt: skip
    with pytest.raises(TypeError, match=r"tensor of shape \(8,\).*reduction='mean'"):
        vector.fit()
    number = Trainer(
        make_model(), torch.optim.SGD, {"lr": 0.1},
        **kwargs(lambda out, y: float(nn.functional.cross_entropy(out, y).detach())),
    )  # fmt: skip
    with pytest.raises(TypeError, match="returned a float, not a tensor"):
        number.fit()


class Stream(IterableDataset):
    def __iter__(self):
        yield from make_data()


def test_iterable_dataset_is_a_clear_error():
    with pytest.raises(TypeError, match="train_data is an IterableDataset"):
        Trainer(make_model(), torch.optim.SGD, {"lr": 0.1}, train_data=Stream(), batch_size=8,
                loss_fn=nn.functional.cross_entropy, **QUIET)  # fmt: skip
    trainer = Trainer(make_model(), torch.optim.SGD, {"lr": 0.1},
                      loss_fn=nn.functional.cross_entropy, **QUIET)  # fmt: skip
    with pytest.raises(TypeError, match="val_data is an IterableDataset"):
        trainer.validate(DataLoader(Stream(), batch_size=8))


def test_unwritable_output_folder_fails_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    started = []

    class Started(Callback):
        def on_train_batch_start(self, trainer, batch, batch_idx):
            started.append(batch_idx)

    trainer = Trainer(
        make_model(), torch.optim.SGD, {"lr": 0.1}, train_data=make_data(), batch_size=8,
        loss_fn=nn.functional.cross_entropy, callbacks=[Started()],
        **{**QUIET, "default_root_dir": blocker / "run"},
    )  # fmt: skip
    with pytest.raises(PermissionError, match=r"cannot write to the output folder .*a_file/run"):
        trainer.fit()
    assert started == []


def test_a_users_epoch_sampler_subclass_is_kept():
    class Reversed(EpochSampler):
        def indices(self):
            return list(reversed(super().indices()))

    data = make_data(16)
    seen = []

    class Record(Callback):
        def on_train_batch_start(self, trainer, batch, batch_idx):
            seen.append(batch[0])

    loader = DataLoader(data, batch_size=4, sampler=Reversed(16, shuffle=False))
    Trainer(make_model(), torch.optim.SGD, {"lr": 0.1}, train_data=loader,
            loss_fn=nn.functional.cross_entropy, callbacks=[Record()], **QUIET).fit()  # fmt: skip
    assert torch.equal(torch.cat(seen), data.tensors[0].flip(0))


# -- accumulating metrics -----------------------------------------------------------------------


def _whole_set_f1(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Macro F1 over both classes (what ``"f1"`` means for two-column logits)."""
    pred = logits.argmax(-1)
    scores = []
    for c in (0, 1):
        tp = ((pred == c) & (target == c)).sum().item()
        fp = ((pred == c) & (target != c)).sum().item()
        fn = ((pred != c) & (target == c)).sum().item()
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(scores) / 2


def test_validation_metrics_are_computed_over_the_whole_set_not_per_batch():
    data = make_data(30, seed=3)  # batches of 8, 8, 8, 6: per-batch means would differ
    model = make_model()
    trainer = Trainer(
        model, torch.optim.SGD, {"lr": 0.1}, batch_size=8, loss_fn=nn.functional.cross_entropy,
        metrics=["accuracy", "f1"], **QUIET,
    )  # fmt: skip
    results = trainer.validate(data)
    x, y = data.tensors
    with torch.no_grad():
        logits = model(x)
    assert results["val_accuracy"] == pytest.approx((logits.argmax(-1) == y).float().mean().item())
    assert results["val_f1"] == pytest.approx(_whole_set_f1(logits, y))
    per_batch = [_whole_set_f1(logits[i : i + 8], y[i : i + 8]) for i in range(0, 30, 8)]
    assert results["val_f1"] != pytest.approx(sum(per_batch) / len(per_batch))


def test_torchmetrics_objects_are_accepted_as_is():
    torchmetrics = pytest.importorskip("torchmetrics")
    data = make_data(30, seed=3)
    model = make_model()
    metric = torchmetrics.classification.MulticlassF1Score(num_classes=2, average="macro")
    trainer = Trainer(
        model, torch.optim.SGD, {"lr": 0.1}, batch_size=8, loss_fn=nn.functional.cross_entropy,
        metrics={"f1_macro_tm": metric}, **QUIET,
    )  # fmt: skip
    results = trainer.validate(data)
    x, y = data.tensors
    with torch.no_grad():
        expected = torchmetrics.functional.classification.multiclass_f1_score(
            model(x), y, num_classes=2, average="macro"
        )
    assert results["val_f1_macro_tm"] == pytest.approx(float(expected))
