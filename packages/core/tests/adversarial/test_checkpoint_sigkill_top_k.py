"""``save_top_k`` holds across SIGKILLs (issue 12, item 6): a real training process is
killed again and again at different steps and resumed with ``resume="last"``; the
folder never holds more than k checkpoints of the run plus the one a kill may catch
between a save and its pruning, and exactly k once the run finishes. The final weights
equal an uninterrupted run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

WORKER = textwrap.dedent(
    """
    import sys, time, torch
    from torch import nn
    from torch.utils.data import TensorDataset
    from deepseek.callbacks import Callback, ModelCheckpoint
    from deepseek.training import Trainer
    from safetensors.torch import save_file

    out, slow = sys.argv[1], sys.argv[2] == "slow"

    class Announce(Callback):
        def on_train_batch_end(self, trainer, outputs, batch, batch_idx):
            print(f"STEP {trainer.global_step}", flush=True)
            if slow:
                time.sleep(0.03)

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(48, 8, generator=g), torch.randint(0, 3, (48,), generator=g))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    trainer = Trainer(
        model, torch.optim.AdamW, {"lr": 0.01}, train_data=data, batch_size=8,
        loss_fn=nn.functional.cross_entropy, max_epochs=4, seed=0, precision="fp32",
        enable_progress_bar=False, default_root_dir=out,
        callbacks=[Announce(), ModelCheckpoint(save_freq=1, save_top_k=2)],
    )
    trainer.fit(resume="last")
    save_file(dict(model.state_dict()), out + "/final.safetensors")
    print("DONE", trainer.global_step, flush=True)
    """
)


def _checkpoints(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_save_top_k_survives_a_sigkill_loop(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    reference, run = tmp_path / "reference", tmp_path / "run"
    subprocess.run([sys.executable, str(script), str(reference), "fast"], check=True, timeout=300)

    folder = run / "checkpoints"
    for kill_at in (4, 11, 17):  # 6 steps per epoch, 24 in all
        proc = subprocess.Popen(
            [sys.executable, str(script), str(run), "slow"], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("STEP") and int(line.split()[1]) >= kill_at:
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        kept = _checkpoints(folder)
        assert 1 <= len(kept) <= 3, kept  # k, plus one a kill caught before its pruning

    done = subprocess.run(
        [sys.executable, str(script), str(run), "fast"],
        check=True,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert "DONE 24" in done.stdout
    assert _checkpoints(folder) == ["epoch_3-step_23", "epoch_3-step_24"]

    from safetensors.torch import load_file

    expected = load_file(str(reference / "final.safetensors"))
    actual = load_file(str(run / "final.safetensors"))
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
