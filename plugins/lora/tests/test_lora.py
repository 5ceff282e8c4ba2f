"""Tests of deepseek-lora on generic torch models (only deepseek-core installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from deepseek_lora import Lora, LoraError, LoraLinear, lora_state_dict, merge
from torch import nn

import deepseek as ds
from deepseek.callbacks import Callback
from deepseek.plugins import registry

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query, self.key, self.value = (
            nn.Linear(dim, dim),
            nn.Linear(dim, dim),
            nn.Linear(dim, dim),
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.query(x) @ self.key(x).transpose(-1, -2) / x.shape[-1] ** 0.5
        return self.norm(x + scores.softmax(-1) @ self.value(x))


class Net(nn.Module):
    """A tiny attention classifier whose layer names look like BERT's."""

    def __init__(self, dim: int = 8, layers: int = 2, classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(4, dim)
        self.layers = nn.ModuleList(Block(dim) for _ in range(layers))
        self.classifier = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h)
        return self.classifier(h.mean(dim=1))


def net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def inputs(n: int = 16) -> torch.Tensor:
    return torch.randn(n, 5, 4, generator=torch.Generator().manual_seed(1))


def lora(**options) -> Lora:
    options = {"rank": 4, "alpha": 8, "target_modules": ["*.query", "*.value"], **options}
    return registry("algorithm").create("lora", **options)


def deepseek(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deepseek.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_plugin_passes_deepseek_plugins_check() -> None:
    result = deepseek("plugins", "--check", "lora")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lora  (deepseek-lora" in result.stdout


def test_registered_by_this_distribution_and_built_by_name() -> None:
    assert registry("algorithm").provider("lora").distribution == "deepseek-lora"
    assert "LoRA" in registry("algorithm").get("lora").description
    algorithm = lora()
    assert isinstance(algorithm, Lora) and algorithm.rank == 4 and algorithm.alpha == 8


def test_wraps_only_matching_linears_and_initial_outputs_are_exactly_the_base_ones() -> None:
    model, x = net().eval(), inputs()
    with torch.no_grad():
        before = model(x)
    base_weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = lora().apply(model)
    assert out is model  # changed in place (works with `at: N` too)
    wrapped = sorted(n for n, m in model.named_modules() if isinstance(m, LoraLinear))
    assert wrapped == ["layers.0.query", "layers.0.value", "layers.1.query", "layers.1.value"]
    assert isinstance(model.layers[0].key, nn.Linear) and not isinstance(
        model.layers[0].key, LoraLinear
    )
    layer = model.layers[0].query
    assert layer.lora_A.shape == (4, 8) and layer.lora_B.shape == (8, 4)
    assert torch.count_nonzero(layer.lora_B) == 0 and torch.count_nonzero(layer.lora_A) > 0
    assert layer.scaling == 2.0
    # the base parameters keep their state-dict names and values
    state = model.state_dict()
    for name, value in base_weights.items():
        assert torch.equal(state[name], value)
    with torch.no_grad():
        assert torch.equal(model(x), before)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == sorted(
        f"layers.{i}.{m}.lora_{ab}" for i in (0, 1) for m in ("query", "value") for ab in "AB"
    )


def test_lora_forward_matches_a_naive_computation() -> None:
    torch.manual_seed(0)
    base = nn.Linear(6, 3)
    layer = LoraLinear(base, rank=2, alpha=3)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 6)
    naive = x @ base.weight.T + base.bias + (x @ layer.lora_A.T @ layer.lora_B.T) * 1.5
    torch.testing.assert_close(layer(x), naive)


def train(model: nn.Module, steps_epochs: int = 2, tmp_path=None) -> ds.Trainer:
    x = inputs(32)
    y = (x.sum(dim=(1, 2)) > 0).long()
    trainer = ds.Trainer(
        model,
        torch.optim.AdamW,
        optimizer_kwargs={"lr": 0.05, "weight_decay": 0.1},
        train_data=torch.utils.data.TensorDataset(x, y),
        batch_size=8,
        max_epochs=steps_epochs,
        loss_fn=nn.functional.cross_entropy,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path) if tmp_path else None,
        seed=0,
    )
    trainer.fit()
    return trainer


def test_training_changes_only_adapters_and_kept_modules(tmp_path) -> None:
    model = lora(trainable=["classifier"]).apply(net())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = train(model, tmp_path=tmp_path)
    assert trainer.global_step == 8
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    adapters = {n for n in before if ".lora_" in n}
    assert changed == adapters | {"classifier.weight", "classifier.bias"}
    assert all(
        torch.count_nonzero(model.get_submodule(n.rsplit(".", 1)[0]).lora_B) > 0 for n in adapters
    )


def test_merge_equals_the_adapter_model_and_leaves_plain_linears(tmp_path) -> None:
    model = lora(trainable=["classifier"]).apply(net())
    train(model, tmp_path=tmp_path)
    model.eval()
    x = inputs()
    with torch.no_grad():
        expected = model(x)
        base_names = {n for n in model.state_dict() if ".lora_" not in n}
        merged = merge(model)
        got = merged(x)
    assert not any(isinstance(m, LoraLinear) for m in merged.modules())
    assert set(merged.state_dict()) == base_names == set(net().state_dict())
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # the merged weights load into a plain model of the architecture (export)
    plain = net(seed=5).eval()
    plain.load_state_dict(merged.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(plain(x), expected, atol=1e-5, rtol=1e-5)


def test_state_dict_round_trips_through_a_file(tmp_path) -> None:
    model = lora(trainable="classifier").apply(net())
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    path = tmp_path / "adapter.pt"
    torch.save(model.state_dict(), path)
    fresh = lora(trainable="classifier").apply(net(seed=3))
    fresh.load_state_dict(torch.load(path, weights_only=True))  # strict
    x = inputs()
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    # only the adapters + kept modules: base checkpoint + small adapter file
    small = lora_state_dict(model)
    assert set(small) == {n for n, p in model.named_parameters() if p.requires_grad}
    again = lora(trainable="classifier").apply(net(seed=0))  # same base weights
    missing, unexpected = again.load_state_dict(small, strict=False)
    assert not unexpected and all(".lora_" not in k and "classifier" not in k for k in missing)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), model(x))


def test_dtype_and_dropout_follow_the_base_layer() -> None:
    base = nn.Linear(4, 4).to(torch.bfloat16)
    layer = LoraLinear(base, rank=2, alpha=2, dropout=0.5)
    assert layer.lora_A.dtype == layer.lora_B.dtype == torch.bfloat16
    assert isinstance(layer.lora_dropout, nn.Dropout)
    x = torch.randn(3, 4, dtype=torch.bfloat16)
    assert torch.equal(layer.eval()(x), base(x))
    assert merge(nn.Sequential(layer))[0].weight.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rank": 0}, "rank must be a positive integer"),
        ({"rank": 2.5}, "rank must be a positive integer"),
        ({"rank": True}, "rank must be a positive integer"),
        ({"alpha": 0}, "alpha must be a positive number"),
        ({"alpha": "16"}, "alpha must be a positive number"),
        ({"dropout": 1.0}, "dropout must be a probability"),
        ({"target_modules": []}, "target_modules is empty"),
        ({"target_modules": [3]}, "target_modules must be a list of module-name patterns"),
        ({"trainable": [""]}, "trainable must be a list"),
    ],
)
def test_bad_options_give_one_clear_error(options, message) -> None:
    with pytest.raises(LoraError, match=message):
        lora(**options)


def test_a_pattern_that_matches_nothing_lists_close_names() -> None:
    model = net()
    with pytest.raises(LoraError) as info:
        lora(target_modules=["*.quer", "*.value", "*.vlaue"]).apply(model)
    message = str(info.value)
    assert "'*.quer' matches no module of Net" in message and "'query'" in message
    assert "'*.vlaue'" in message and "'value'" in message
    assert "'*.value'" not in message  # good patterns are not reported
    assert isinstance(info.value, ValueError)
    assert not any(isinstance(m, LoraLinear) for m in model.modules())  # nothing changed
    assert all(p.requires_grad for p in model.parameters())


def test_a_pattern_on_a_non_linear_module_says_so() -> None:
    with pytest.raises(LoraError, match=r"matches no Linear \('layers.0.norm' is a LayerNorm"):
        lora(target_modules=["*.norm"]).apply(net())
    with pytest.raises(LoraError, match="trainable pattern 'clasifier' matches no module"):
        lora(trainable=["clasifier"]).apply(net())


def test_applying_twice_asks_to_merge_first() -> None:
    model = lora().apply(net())
    with pytest.raises(LoraError, match="already has a LoRA adapter; merge"):
        lora().apply(model)


def test_the_shipped_example_config_trains_with_lora(tmp_path) -> None:
    """examples/lora.yaml run by `deepseek train`, plus a callback that records the model."""
    for name in ("lora.yaml", "tiny_job.py"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    (tmp_path / "record.py").write_text(
        textwrap.dedent("""
        import json
        from pathlib import Path
        from deepseek.callbacks import Callback

        class Record(Callback):
            def on_fit_end(self, trainer):
                m = trainer.unwrapped_model
                json.dump({"types": {n: type(x).__name__ for n, x in m.named_modules()},
                           "trainable": sorted(n for n, p in m.named_parameters()
                                               if p.requires_grad),
                           "lora_B_nonzero": bool(m.layers[0].query.lora_B.abs().sum() > 0)},
                          open(Path(__file__).parent / "record.json", "w"))
        """)
    )
    record_cb = ["--set", "callbacks=[{name: 'record:Record'}]"]
    result = deepseek("train", "lora.yaml", *record_cb, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((tmp_path / "record.json").read_text())
    lora_layers = sorted(n for n, t in record["types"].items() if t == "LoraLinear")
    assert lora_layers == [f"layers.{i}.{m}" for i in (0, 1) for m in ("query", "value")]
    assert record["trainable"] == sorted(
        [f"{n}.lora_{ab}" for n in lora_layers for ab in "AB"]
        + ["classifier.bias", "classifier.weight"]
    )
    assert record["lora_B_nonzero"]
    bad = deepseek("train", "lora.yaml", "--set", "algorithms=[{name: lora, rank: 0}]",
                   cwd=tmp_path)  # fmt: skip
    assert bad.returncode != 0 and "rank must be a positive integer" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr


def test_the_readme_python_snippet_runs() -> None:
    readme = (EXAMPLES.parent / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert snippets
    for code in snippets:
        namespace: dict = {}
        exec(compile(code, "README.md", "exec"), namespace)  # the README's own example
    assert not any(isinstance(m, LoraLinear) for m in namespace["export"].modules())
    assert sorted(namespace["adapter"]) == ["0.lora_A", "0.lora_B", "2.bias", "2.weight"]


def test_matches_peft_outputs_and_merged_weights() -> None:
    """The reference: Hugging Face peft's LoRA with the same A and B."""
    peft = pytest.importorskip("peft")
    ours = lora(rank=4, alpha=8).apply(net())
    with torch.no_grad():
        for module in ours.modules():
            if isinstance(module, LoraLinear):
                module.lora_B.normal_()
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"])
    theirs = peft.get_peft_model(net(), config)
    with torch.no_grad():
        for name, module in ours.named_modules():
            if isinstance(module, LoraLinear):
                peer = theirs.base_model.model.get_submodule(name)
                peer.lora_A["default"].weight.copy_(module.lora_A)
                peer.lora_B["default"].weight.copy_(module.lora_B)
    ours.eval(), theirs.eval()
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))
        assert {n for n, p in theirs.named_parameters() if p.requires_grad} == {
            f"base_model.model.{n}.{ab}.default.weight"
            for n, m in ours.named_modules() if isinstance(m, LoraLinear)
            for ab in ("lora_A", "lora_B")
        }  # fmt: skip
        merged_theirs = theirs.merge_and_unload()
        merged_ours = merge(ours)
    for (n1, p1), (n2, p2) in zip(
        merged_ours.state_dict().items(), merged_theirs.state_dict().items(), strict=True
    ):
        assert n1 == n2
        torch.testing.assert_close(p1, p2)


class Snapshots(Callback):
    def __init__(self) -> None:
        self.params: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, outputs, batch, batch_idx) -> None:
        model = trainer.unwrapped_model
        self.params.append({n: p.detach().clone() for n, p in model.named_parameters()})


def test_ema_weights_match_a_naive_average_and_are_applied_at_the_end(tmp_path) -> None:
    ema = registry("callback").create("ema_weights", decay=0.8)
    snapshots = Snapshots()
    model = lora(trainable=["classifier"]).apply(net())
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    x = inputs(32)
    trainer = ds.Trainer(
        model, torch.optim.SGD, optimizer_kwargs={"lr": 0.5},
        train_data=torch.utils.data.TensorDataset(x, (x.sum(dim=(1, 2)) > 0).long()),
        batch_size=8, max_epochs=1, loss_fn=nn.functional.cross_entropy,
        enable_progress_bar=False, default_root_dir=str(tmp_path), callbacks=[ema, snapshots],
    )  # fmt: skip
    trainer.fit()
    assert ema.updates == 4 == len(snapshots.params)
    for name, value in start.items():
        expected = value.clone()
        for snap in snapshots.params:
            expected = 0.8 * expected + 0.2 * snap[name]
        torch.testing.assert_close(dict(model.named_parameters())[name].detach(), expected)
    assert set(ema.state_dict()["average"]) == set(start)  # only trainable weights


@pytest.mark.parametrize(
    ("options", "message"),
    [({"decay": 1.0}, "decay must be in"), ({"every_n_steps": 0}, "every_n_steps must be")],
)
def test_ema_weights_bad_options(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        registry("callback").create("ema_weights", **options)


class SeenAtValidation(Callback):
    def __init__(self) -> None:
        self.seen: list[dict[str, torch.Tensor]] = []

    def on_validation_start(self, trainer) -> None:
        model = trainer.unwrapped_model
        self.seen.append({n: p.detach().clone() for n, p in model.named_parameters()})


def test_ema_weights_are_validated_on_then_swapped_back(tmp_path) -> None:
    ema = registry("callback").create("ema_weights", decay=0.5, apply_at_end=False)
    seen, snapshots = SeenAtValidation(), Snapshots()
    x = inputs(16)
    data = torch.utils.data.TensorDataset(x, (x.sum(dim=(1, 2)) > 0).long())
    model = net()
    trainer = ds.Trainer(
        model, torch.optim.SGD, optimizer_kwargs={"lr": 0.5}, train_data=data, val_data=data,
        batch_size=8, max_epochs=1, loss_fn=nn.functional.cross_entropy,
        enable_progress_bar=False, default_root_dir=str(tmp_path),
        callbacks=[ema, seen, snapshots],
    )  # fmt: skip
    trainer.fit()
    assert seen.seen
    for name, value in seen.seen[-1].items():
        torch.testing.assert_close(value, ema.average[name])  # validated on the average
    final = dict(model.named_parameters())
    for name, value in snapshots.params[-1].items():
        assert torch.equal(final[name], value)  # the trained weights are back
    assert not torch.equal(final["classifier.weight"], ema.average["classifier.weight"])
