"""deepseek-quant is discovered through its one real ``deepseek`` entry point."""

from __future__ import annotations

from importlib.metadata import entry_points

from torch import nn

from deepseek.plugins import plugins, registry

OPTIONS = {
    "distillation": {"teacher": nn.Linear(2, 2)},
    "l1_channel_pruning": {},
    "ptq": {},
    "qat": {},
    "prune": {"amount": 0.5},
}


def test_entry_point_is_declared() -> None:
    points = {ep.name: ep.value for ep in entry_points(group="deepseek")}
    assert points.get("quant") == "deepseek.quantization.plugin"


def test_every_algorithm_is_registered_by_deepseek_quant() -> None:
    algorithms = registry("algorithm")
    for name, options in OPTIONS.items():
        assert name in algorithms.names()
        assert algorithms.provider(name).distribution == "deepseek-quant"
        assert callable(algorithms.create(name, **options).apply)
    record = next(r for r in plugins() if r.distribution == "deepseek-quant")
    assert sorted(record.registered["algorithm"]) == sorted(OPTIONS)
