"""Bad inputs that need no second process (a world of one: what a plain ``python`` run
joins), each one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import deepseek as ds
import deepseek.distributed as ddist
from deepseek.distributed import TORCHRUN_VARS
from deepseek.distributed.pipeline import split_layers
from deepseek.distributed.tensor_parallel import TwoDStrategy, resolve_plan


@pytest.fixture
def alone(monkeypatch: pytest.MonkeyPatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    yield
    if ddist.is_initialized():
        ddist.destroy_process_group()


def net(width: int) -> nn.Module:
    torch.manual_seed(0)
    block = lambda: nn.Sequential(nn.Linear(width, width), nn.Tanh())  # noqa: E731
    return nn.Sequential(nn.Linear(4, width), nn.Sequential(block(), block()), nn.Linear(width, 2))


def trainer(width: int, strategy: str, tmp_path: Path) -> ds.Trainer:
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(
        torch.randn(8, 4, generator=g), torch.randn(8, 2, generator=g)
    )
    return ds.Trainer(
        net(width), torch.optim.AdamW, train_data=data, batch_size=4, loss_fn=F.mse_loss,
        strategy=strategy, max_epochs=1, enable_progress_bar=False, default_root_dir=None,
    )  # fmt: skip


@pytest.mark.parametrize("strategy", ["fsdp", "pipeline"])
def test_resuming_with_incompatible_shapes_is_one_clear_error(
    alone, tmp_path: Path, strategy: str
) -> None:
    first = trainer(8, strategy, tmp_path)
    first.fit()
    path = first.save_checkpoint(tmp_path / "ckpt")
    first.strategy.teardown()
    second = trainer(16, strategy, tmp_path)
    with pytest.raises(ValueError, match=r"(does not fit|does not fit the model).*\(16, 4\)|16"):
        second.fit(resume=path)


def test_a_world_of_one_trains_with_fsdp_and_pipeline(alone, tmp_path: Path) -> None:
    for strategy in ("fsdp", "pipeline", "tp"):
        if strategy == "tp":
            model = net(8)
            model.tp_plan = {"1.*.0": "colwise"}
            data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randn(8, 2))
            t = ds.Trainer(model, torch.optim.SGD, optimizer_kwargs={"lr": 0.1},
                           train_data=data, batch_size=4, loss_fn=F.mse_loss, strategy="tp",
                           max_epochs=1, enable_progress_bar=False,
                           default_root_dir=None)  # fmt: skip
        else:
            t = trainer(8, strategy, tmp_path)
        t.fit()
        assert t.global_step == 2
        t.strategy.teardown()
        assert not ddist.is_initialized()


def test_pipeline_split_that_does_not_match_the_model() -> None:
    model = net(8)
    with pytest.raises(ValueError, match=r"split point\(s\) \['2.0'\] do not match the model"):
        split_layers(model, 2, ["2.0"])
    with pytest.raises(ValueError, match="cannot split Sequential"):
        split_layers(model, 9)
    with pytest.raises(TypeError, match="sequence of layers"):
        split_layers(nn.Linear(2, 2), 2)


def test_tp_plan_errors_name_the_pattern() -> None:
    with pytest.raises(ValueError, match="pattern 'blocks.*' matches no submodule"):
        resolve_plan({"blocks.*": "colwise"}, net(8))
    with pytest.raises(ValueError, match="unknown style 'diagonal'"):
        resolve_plan({"0": "diagonal"}, net(8))
    with pytest.raises(ValueError, match="needs a plan"):
        resolve_plan(None, net(8))


def test_2d_mesh_that_does_not_fit_the_world() -> None:
    with pytest.raises(ValueError, match="needs dp x tp = 2 x 2 processes, but 2 were launched"):
        TwoDStrategy(dp=2, tp=2).mesh_shape(2)
    assert TwoDStrategy(tp=2).mesh_shape(4) == (2, 2)


def test_fsdp_takes_its_mixed_precision_policy_from_the_trainer(alone, tmp_path: Path) -> None:
    seen: list[torch.dtype] = []
    model = net(8)
    model[0].register_forward_hook(lambda m, args, out: seen.append(m.weight.dtype))
    data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randn(8, 2))
    t = ds.Trainer(model, torch.optim.SGD, optimizer_kwargs={"lr": 0.1}, train_data=data,
                   batch_size=4, loss_fn=F.mse_loss, strategy="fsdp", precision="bf16-mixed",
                   max_epochs=1, enable_progress_bar=False, default_root_dir=None)  # fmt: skip
    t.fit()
    t.strategy.teardown()
    assert seen and all(dtype == torch.bfloat16 for dtype in seen)  # computed in bf16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # kept in fp32


def test_fsdp_cpu_offload_on_the_cpu_warns_and_trains_like_one_process(
    alone, tmp_path: Path
) -> None:
    data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randn(8, 2))
    states = []
    for strategy in ({"cpu_offload": True}, None):
        kwargs = dict(optimizer_kwargs={"lr": 0.1}, train_data=data, batch_size=4,
                      loss_fn=F.mse_loss, max_epochs=1, enable_progress_bar=False,
                      default_root_dir=None, shuffle=False)  # fmt: skip
        if strategy is not None:
            kwargs["strategy"] = ddist.FSDPStrategy(**strategy)
        if strategy is not None:
            with pytest.warns(
                UserWarning, match="cpu_offload has no effect when training on the CPU"
            ):
                t = ds.Trainer(net(8), torch.optim.SGD, **kwargs)
        else:
            t = ds.Trainer(net(8), torch.optim.SGD, **kwargs)
        t.fit()
        states.append(t.strategy.model_state_dict(t.model))
        t.strategy.teardown()
    for key, value in states[1].items():
        torch.testing.assert_close(states[0][key], value)
