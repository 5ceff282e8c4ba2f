"""One config shape (issue 7 item 2, issue 14 item 7): the trainer section is the Trainer's
own signature, component options are their classes', and YAML reaches every option."""

from __future__ import annotations

import dataclasses
import inspect
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from deepseek.config import (
    ConfigError,
    Section,
    TrainerConfig,
    dump_config,
    load_config,
    parse_config,
    register_section,
    trainer_options,
    unregister_section,
)
from deepseek.config.schema import SET_ELSEWHERE
from deepseek.training import Trainer
from deepseek.training.job import build_trainer, run_job

MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    class Block(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.linear = nn.Linear(width, width)

        def forward(self, x):
            return torch.relu(self.linear(x))

    def model(width=8, dropout=0.0):
        blocks = nn.Sequential(Block(width), Block(width))
        return nn.Sequential(nn.Linear(4, width), blocks, nn.Dropout(dropout), nn.Linear(width, 2))

    def data(n=32, seed=0):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 4, generator=g)
        return TensorDataset(x, (x.sum(1) > 0).long())

    class Scale:
        '''A model algorithm: multiply every weight by ``factor`` (in place).'''
        calls = []

        def __init__(self, factor: float = 2.0):
            self.factor = factor

        def apply(self, model):
            Scale.calls.append(self.factor)
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(self.factor)

    class NewHead:
        '''An algorithm that replaces parameters: a fresh last layer (in place).'''

        def apply(self, model):
            model[-1] = nn.Linear(model[-1].in_features, 2)

    def top1(preds, target):
        return (preds.argmax(-1) == target).float().mean()
    """
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "schemajob.py").write_text(MODULE)
    return tmp_path


def job_config(folder: Path, **trainer) -> dict:
    return {
        "seed": 0,
        "output_dir": str(folder / "out"),
        "plot": False,
        "model": {"name": "schemajob:model"},
        "data": {"train": "schemajob:data", "val": {"name": "schemajob:data", "seed": 1}},
        "trainer": {
            "max_epochs": 1,
            "loss": "cross_entropy",
            "enable_progress_bar": False,
            **trainer,
        },  # fmt: skip
    }


def build(folder: Path, data: dict, overrides=()) -> Trainer:
    return build_trainer(parse_config(data, overrides, source_dir=folder))


def test_trainer_section_is_the_trainer_signature():
    params = inspect.signature(Trainer.__init__).parameters
    fields = {f.name: f for f in dataclasses.fields(TrainerConfig)}
    expected = {n for n in params if n not in ("self",) and f"trainer.{n}" not in SET_ELSEWHERE}
    assert expected <= set(fields)
    fit = {
        n
        for n in inspect.signature(Trainer.fit).parameters
        if n not in ("self", "train_data", "val_data")
    }
    assert "resume" in fit
    assert set(fields) - expected == {"loss"} | fit  # loss_fn's YAML form, fit's own options
    defaults = TrainerConfig()
    for name in expected - {"precision", "strategy"}:
        default = params[name].default
        value = getattr(defaults, name)
        assert value == (list(default) if isinstance(default, tuple) else default), name
    assert defaults.precision.name == params["precision"].default
    assert defaults.strategy.name == params["strategy"].default


def test_a_new_trainer_argument_is_settable_with_no_other_edit(monkeypatch):
    class NewTrainer(Trainer):
        def __init__(self, *args, warmup_steps: int = 7, ema_decay: float | None = None, **kw):
            super().__init__(*args, **kw)

    monkeypatch.setattr(trainer_options, "_trainer_class", lambda: NewTrainer)
    monkeypatch.setattr(trainer_options, "trainer_parameters", trainer_options.trainer_parameters)
    cls = trainer_options.trainer_config_class.__wrapped__()
    assert cls().warmup_steps == 7 and cls().ema_decay is None
    from deepseek.config.schema import from_dict

    assert from_dict(cls, {"ema_decay": 1}, "trainer").ema_decay == 1.0
    with pytest.raises(ConfigError, match="trainer.warmup_steps: 'ten' \\(str\\) is not allowed"):
        from_dict(cls, {"warmup_steps": "ten"}, "trainer")


def test_every_trainer_key_reaches_the_trainer(folder):
    trainer = build(
        folder,
        job_config(
            folder,
            accumulate_grad_batches=2,
            gradient_clip_norm=0.5,
            val_every_n_epochs=2,
            max_steps=3,
            on_nan_loss="skip",
        ),
    )
    assert trainer.accumulate_grad_batches == 2
    assert trainer.gradient_clip_norm == 0.5
    assert trainer.val_every_n_epochs == 2
    assert trainer.max_steps == 3
    assert trainer.on_nan_loss == "skip"


def test_precision_with_options(folder):
    trainer = build(folder, job_config(folder, precision={"name": "fp16-mixed", "loss_scale": 128}))
    assert trainer.precision.static_scale == 128.0
    # and the --set form on top of a plain name
    cfg = parse_config(
        job_config(folder, precision="fp16-mixed"), ["trainer.precision.loss_scale=64"]
    )
    assert cfg.trainer.precision.kwargs == {"loss_scale": 64}


def test_loss_with_options_matches_torch(folder):
    trainer = build(
        folder, job_config(folder, loss={"name": "cross_entropy", "label_smoothing": 0.1})
    )
    logits, target = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    expected = torch.nn.functional.cross_entropy(logits, target, label_smoothing=0.1)
    assert torch.equal(trainer.loss_fn(logits, target), expected)
    trainer = build(
        folder, job_config(folder, loss={"name": "CrossEntropyLoss", "label_smoothing": 0.1})
    )
    assert torch.allclose(trainer.loss_fn(logits, target), expected)


def test_selective_activation_checkpointing_from_yaml(folder):
    from deepseek.nn.activation_checkpointing import CheckpointWrapper

    trainer = build(folder, job_config(folder, gradient_checkpointing="selective"))
    wrapped = [m for m in trainer.unwrapped_model.modules() if isinstance(m, CheckpointWrapper)]
    assert len(wrapped) == 2 and all(m.selective for m in wrapped)
    trainer = build(folder, job_config(folder, gradient_checkpointing={"module_types": ["Block"]}))
    wrapped = [m for m in trainer.unwrapped_model.modules() if isinstance(m, CheckpointWrapper)]
    assert len(wrapped) == 2 and not any(m.selective for m in wrapped)


def test_algorithms_apply_in_order_at_start_and_at_an_epoch(folder):
    data = job_config(folder, max_epochs=2)
    data["algorithms"] = [
        {"name": "schemajob:Scale", "factor": 0.0},
        {"name": "schemajob:Scale", "factor": 3.0},
        {"name": "schemajob:Scale", "at": 1, "factor": 5.0},
    ]
    trainer = build(folder, data)
    from deepseek.config import import_target

    scale = import_target("schemajob:Scale", "x", config_dir=folder)  # the module the job used
    assert scale.calls == [0.0, 3.0]  # applied in order, before training
    assert all(torch.count_nonzero(p) == 0 for p in trainer.unwrapped_model.parameters())
    trainer.fit()
    assert scale.calls == [0.0, 3.0, 5.0]  # at the start of epoch 1
    with pytest.raises(ConfigError, match=r"algorithms\[0\].at: 'later'"):
        parse_config({**data, "algorithms": [{"name": "x:y", "at": "later"}]})
    with pytest.raises(ConfigError, match=r"algorithms\[0\].factr: not accepted by Scale"):
        build(folder, {**data, "algorithms": [{"name": "schemajob:Scale", "factr": 1.0}]})
    with pytest.raises(ConfigError, match=r"algorithms\[0\].name: unknown algorithm 'qatt'"):
        build(folder, {**data, "algorithms": [{"name": "qatt"}]})


def test_an_algorithm_at_an_epoch_that_replaces_parameters_gets_them_trained(folder):
    """The optimizer is rebuilt over the new parameters, so the new head trains."""
    data = job_config(folder, max_epochs=2)
    data["algorithms"] = [{"name": "schemajob:NewHead", "at": 1}]
    trainer = build(folder, data)
    trainer.fit()
    head = trainer.unwrapped_model[-1]
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert {id(head.weight), id(head.bias)} <= optimized
    assert optimized == {id(p) for p in trainer.unwrapped_model.parameters()}


def test_metrics_by_name_and_module_callable(folder):
    trainer = build(folder, job_config(folder, metrics=["accuracy", "f1_macro", "schemajob:top1"]))
    trainer.fit()
    assert {"val_accuracy", "val_f1_macro", "val_top1"} <= set(trainer.metrics)
    assert trainer.metrics["val_top1"] == pytest.approx(trainer.metrics["val_accuracy"])


@dataclass
class TrackingOptions:
    every_n_steps: int = 1
    project: str | None = None


def test_a_package_declares_its_own_section():
    base = {"model": "m:f", "data": {"train": "d:f"}}
    with pytest.raises(ConfigError, match="tracking: unknown key"):
        parse_config({**base, "tracking": {}})
    register_section("tracking", TrackingOptions)
    try:
        cfg = parse_config(base, ["tracking.every_n_steps=4"])
        assert cfg.tracking == TrackingOptions(every_n_steps=4)
        assert parse_config(base).tracking == TrackingOptions()
        with pytest.raises(ConfigError, match="tracking.every_n_step: unknown key. Did you"):
            parse_config({**base, "tracking": {"every_n_step": 2}})
        with pytest.raises(ConfigError, match="tracking.every_n_steps: 'two'"):
            parse_config({**base, "tracking": {"every_n_steps": "two"}})
        assert "every_n_steps: 4" in dump_config(cfg)
    finally:
        unregister_section("tracking")


def test_distributed_section_is_an_object_with_attributes():
    cfg = parse_config({"model": "m:f", "data": {"train": "d:f"}})
    section = cfg.distributed
    assert not isinstance(section, dict)
    if isinstance(section, Section):  # no package declared it: the raw keys as attributes
        cfg = parse_config({"model": "m:f", "data": {"train": "d:f"}, "distributed": {"x": 2}})
        assert cfg.distributed.x == 2 and cfg.distributed.get("x") == 2
    else:  # deepseek-dist's dataclass: typed, with key-path errors
        assert dataclasses.is_dataclass(section)
        with pytest.raises(ConfigError, match="distributed.nope: unknown key"):
            parse_config({"model": "m:f", "data": {"train": "d:f"}, "distributed": {"nope": 1}})


def test_print_config_shows_defaults_and_the_run_saves_it(folder, capsys):
    config = folder / "job.yaml"
    import yaml

    config.write_text(yaml.safe_dump(job_config(folder)))
    from deepseek.cli import main

    assert main(["train", str(config), "--print-config"]) == 0
    printed = capsys.readouterr().out
    for line in ("accumulate_grad_batches: 1", "gradient_clip_norm: null", "precision:",
                 "name: auto", "val_every_n_epochs: 1", "algorithms: []"):  # fmt: skip
        assert line in printed
    run_job(load_config(config))
    saved = folder / "out" / "config.yaml"
    assert saved.read_text() == printed
    assert load_config(saved).to_dict() == load_config(config).to_dict()


def test_component_options_checked_before_the_model_is_built(folder):
    data = job_config(folder)
    data["model"] = {"name": "schemajob:model", "width": 4}
    data["optimizer"] = {"name": "SGD", "lr": "fast"}
    with pytest.raises(ConfigError, match=r"optimizer.lr: 'fast' \(str\) is not a number"):
        build(folder, data)


class _ZeroWeights:
    """A registered algorithm: zero every parameter (in place)."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def apply(self, model):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(self.value)


class _AlgorithmPlugin:
    """A plugin registered at run time, as a package's entry point would be."""

    from deepseek.plugins import hookimpl as _hookimpl

    @_hookimpl
    def deepseek_algorithms(self):
        from deepseek.plugins.specs import AlgorithmSpec

        return [AlgorithmSpec("fill_test", _ZeroWeights, "fill every weight")]


def test_algorithms_by_registry_name(folder, fresh_plugins):
    from deepseek.plugins.manager import get_plugin_manager

    get_plugin_manager().register_plugin(_AlgorithmPlugin(), name="fill-test-plugin")
    data = job_config(folder)
    data["algorithms"] = [{"name": "fill_test", "value": 0.5}]
    trainer = build(folder, data)
    assert all(torch.all(p == 0.5) for p in trainer.unwrapped_model.parameters())
    data["algorithms"] = [{"name": "fill_test", "valu": 0.5}]
    with pytest.raises(ConfigError, match=r"algorithms\[0\].valu: not accepted by _ZeroWeights"):
        build(folder, data)
