"""deepseek-lora under DDP: two gloo processes (torchrun) train LoRA adapters with
core's Trainer and deepseek-dist's ``ddp`` strategy; the ranks end with the same
adapters (their gradients were averaged), the frozen weights untouched, and the merged
model equal to the adapter model."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepseek.distributed")
LORA_SRC = Path(__file__).resolve().parents[1] / "plugins" / "lora" / "src"

WORKER = textwrap.dedent(
    """
    import sys
    sys.path.append(sys.argv[2])  # plugins/lora/src, when deepseek-lora is not installed
    import torch, torch.distributed as dist
    from torch import nn
    import deepseek as ds
    from deepseek_lora import Lora, merge

    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                             nn.Linear(16, 2))

    torch.manual_seed(1)
    x = torch.randn(64, 6)
    data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    lora = model()
    base = {n: p.detach().clone() for n, p in lora.named_parameters()}
    lora = Lora(rank=2, alpha=4, target_modules=["0", "2"], trainable=["4"]).apply(lora)
    trainer = ds.Trainer(lora, torch.optim.SGD, optimizer_kwargs={"lr": 0.5},
                         train_data=data, batch_size=8, max_epochs=2, strategy="ddp",
                         loss_fn=nn.functional.cross_entropy, enable_progress_bar=False,
                         default_root_dir=None, seed=0)
    trainer.fit()
    model_ = trainer.unwrapped_model.eval()
    with torch.no_grad():
        adapted = model_(x)
        state = {k: v.clone() for k, v in model_.state_dict().items()}
        merged = merge(model_)(x)
    rank = dist.get_rank() if dist.is_initialized() else int(__import__("os").environ["RANK"])
    torch.save({"state": state, "base": base, "adapted": adapted, "merged": merged,
                "steps": trainer.global_step}, f"{sys.argv[1]}/rank{rank}.pt")
    """
)


def test_lora_trains_under_ddp_on_two_gloo_processes(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--standalone", str(tmp_path / "worker.py"), str(tmp_path), str(LORA_SRC),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["steps"] == r1["steps"] == 2 * 64 // (8 * 2)  # each rank sees half the data
    assert r0["state"].keys() == r1["state"].keys()
    for key, value in r0["state"].items():
        assert torch.equal(value, r1["state"][key]), key  # gradients were all-reduced
    for name, value in r0["base"].items():  # Linear weights keep their state-dict names
        changed = not torch.equal(r0["state"][name], value)
        assert changed == name.startswith("4."), name  # only the kept head trains
    assert any(not torch.equal(r0["state"][k], torch.zeros_like(r0["state"][k]))
               for k in r0["state"] if k.endswith("lora_B"))  # fmt: skip
    torch.testing.assert_close(r0["merged"], r0["adapted"], atol=1e-5, rtol=1e-5)
