"""deepseek-dist is discovered through its real ``deepseek`` entry point."""

from __future__ import annotations

from importlib.metadata import entry_points

import torch.distributed as dist

from deepseek.distributed import DDPStrategy
from deepseek.distributed.plugin import deepseek_env_report
from deepseek.plugins import plugins, registry
from deepseek.utils.check_env import collect


def test_entry_point_is_declared() -> None:
    points = {ep.name: ep.value for ep in entry_points(group="deepseek")}
    assert points.get("dist") == "deepseek.distributed.plugin"


def test_ddp_strategy_is_registered_by_deepseek_dist() -> None:
    strategies = registry("strategy")
    assert "ddp" in strategies.names()
    assert strategies.provider("ddp").distribution == "deepseek-dist"
    strategy = strategies.create("ddp", find_unused_parameters=True)
    assert isinstance(strategy, DDPStrategy)
    assert strategy.ddp_kwargs == {"find_unused_parameters": True}
    record = next(r for r in plugins() if r.distribution == "deepseek-dist")
    assert record.registered["strategy"] == ["ddp", "fsdp", "tp", "2d", "pipeline"]


def test_every_strategy_builds_by_name_and_from_a_mapping() -> None:
    strategies = registry("strategy")
    for name in ("fsdp", "tp", "2d", "pipeline"):
        assert strategies.create(name).name == name
    fsdp = strategies.create("fsdp", cpu_offload=True, reshard_after_forward=False)
    assert (fsdp.cpu_offload, fsdp.reshard_after_forward) == (True, False)


def test_env_report_names_the_backends_torch_has() -> None:
    lines = deepseek_env_report()
    available = next(line for line in lines if "backends available:" in line)
    missing = next(line for line in lines if "not available:" in line)
    for name in ("gloo", "nccl", "mpi"):
        line = available if dist.is_backend_available(name) else missing
        assert name in line.split(":", 1)[1]
    assert set(lines) <= set(collect()["plugin_reports"])  # what `deepseek env` prints
