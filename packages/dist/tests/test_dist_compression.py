"""Gradient compression hooks on a real 2-rank gloo job: bytes per step against the
formula of each hook, weights against the uncompressed run; bad inputs fail on every
rank without leaving one stuck in a collective."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from deepseek.distributed.compression import GradientCompression

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("compression_worker", HERE / "compression_worker.py")
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)
sys.path.insert(0, str(HERE))
from test_dist_strategies import torchrun  # noqa: E402


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("compression")
    torchrun(HERE / "compression_worker.py", str(out))
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def fp32_bytes() -> int:
    return 4 * sum(p.numel() for p in worker.make_model().parameters())


def powersgd_bytes(rank: int) -> int:
    """P and Q of every matrix worth compressing, plus the vectors, in fp32."""
    total = 0
    for p in worker.make_model().parameters():
        if p.dim() < 2:
            total += p.numel()
            continue
        n, m = p.shape[0], p[0].numel()
        r = min(n, m, rank)
        total += (n + m) * r if (n + m) * r * 2 < n * m else n * m
    return 4 * total


def test_bytes_per_step_follow_each_hook(ranks: list[dict]) -> None:
    for result in ranks:
        assert result["none"]["bytes"] == [fp32_bytes()] * worker.STEPS
        assert result["fp16"]["bytes"] == [fp32_bytes() // 2] * worker.STEPS
        assert result["bf16"]["bytes"] == [fp32_bytes() // 2] * worker.STEPS
        powersgd = result["powersgd"]["bytes"]
        assert powersgd[:2] == [fp32_bytes()] * 2  # warm-up: plain all-reduce
        assert powersgd[2:] == [powersgd_bytes(2)] * (worker.STEPS - 2)
        assert powersgd_bytes(2) < 0.3 * fp32_bytes()


def test_compressed_training_stays_close_to_uncompressed(ranks: list[dict]) -> None:
    plain = ranks[0]["none"]["state"]
    for name, tol in (("fp16", 1e-2), ("bf16", 5e-2), ("powersgd", 0.2)):
        for key, value in ranks[0][name]["state"].items():
            torch.testing.assert_close(value, plain[key], atol=tol, rtol=0, msg=f"{name} {key}")
        for key, value in ranks[0][name]["state"].items():  # replicas stay identical
            assert torch.equal(value, ranks[1][name]["state"][key])


def test_bad_inputs_fail_on_every_rank_and_nothing_hangs(ranks: list[dict]) -> None:
    for result in ranks:
        errors = result["errors"]
        assert "2d strategy needs dp x tp = 2 x 2 processes, but 2 were launched" in errors["mesh"]
        assert "unknown gradient compression 'zip'" in errors["compression"]
        assert "gives 3 stages, but num_stages is 2" in errors["split"]
        assert "num_microbatches=3 does not divide the batch of 8" in errors["microbatches"]
        assert errors["group_alive"] == "2"


def test_compression_options_are_checked() -> None:
    with pytest.raises(ValueError, match="powersgd accepts: rank, warmup_steps"):
        GradientCompression("powersgd", ranks=2)
    with pytest.raises(ValueError, match="warmup_steps must be >= 2"):
        GradientCompression("powersgd", warmup_steps=0)
    with pytest.raises(ValueError, match="needs a 'name' key"):
        GradientCompression.from_value({"rank": 2})
    with pytest.raises(ValueError, match="reduce_strategy must be one of"):
        GradientCompression("fp16", reduce_strategy="mean")
