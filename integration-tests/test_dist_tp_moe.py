"""deepseek-dist's ``tp`` strategy on deepseek-moe's MoETransformerLM, whose ``tp_plan``
attribute is the plan (no user code): 2 real gloo ranks, logits and the global gradient
norm equal to one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepseek.moe")

WORKER = textwrap.dedent("""\
    import sys, torch
    import deepseek as ds, deepseek.distributed as ddist
    from deepseek.distributed.grad_norm import total_grad_norm
    from deepseek.moe.models import MoETransformerLM

    torch.set_num_threads(1)
    ddist.init_process_group("gloo", timeout_s=120)
    cfg = dict(n_layers=2, d_model=64, n_heads=4, dense_d_hidden=128, moe_d_hidden=32,
               num_experts=4)
    torch.manual_seed(0)
    model = MoETransformerLM(**cfg)
    strategy = ds.distributed.TensorParallelStrategy()   # plan: MoETransformerLM.tp_plan
    strategy.setup(ds.backends.get("cpu"))
    model = strategy.setup_model(model)
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    logits = model(x)
    logits.float().square().mean().backward()
    sharded = sum(1 for p in model.parameters() if type(p).__name__ == "DTensor")
    torch.save({"logits": logits.detach(), "norm": total_grad_norm(model.parameters()),
                "sharded": sharded}, f"{sys.argv[1]}/rank{ddist.get_rank()}.pt")
""")


def test_tp_runs_the_moe_language_model_from_its_own_plan(tmp_path: Path) -> None:
    from deepseek.distributed.grad_norm import total_grad_norm
    from deepseek.moe.models import MoETransformerLM

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(port), str(script), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    torch.manual_seed(0)
    reference = MoETransformerLM(n_layers=2, d_model=64, n_heads=4, dense_d_hidden=128,
                                 moe_d_hidden=32, num_experts=4)  # fmt: skip
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    logits = reference(x)
    logits.float().square().mean().backward()
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert result["sharded"] > 0
        torch.testing.assert_close(result["logits"], logits.detach(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            result["norm"], total_grad_norm(reference.parameters()), rtol=1e-4, atol=1e-6
        )
