"""A real job: the MoE language model of ``examples/moe_lm.yaml`` (shrunk) trained with
expert parallelism (strategy ``expert``: the routed experts sharded over two gloo
processes, tokens exchanged with all-to-all) through ``deepseek launch``, SIGKILLed from
outside mid-training after a checkpoint was written, and resumed with ``resume: last``.

Three launches of the same config: an uninterrupted run; a run that is killed (the
launcher and both workers, SIGKILL, while it is between two checkpoints); and the
resumed run, which must end where the uninterrupted run ended: the same weights (experts
gathered from both ranks) and the same per-step losses after the resume point.

The killed run pauses right after step ``PAUSE_AT`` (a callback from this file, named in
the config as ``module:callable``) so that the kill lands at a known point between two
checkpoints, not at a random one.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _launch  # noqa: E402

EXAMPLE = _launch.ROOT / "examples" / "moe_lm.yaml"
MAX_STEPS, SAVE_EVERY, PAUSE_AT = 12, 4, 6  # killed after step 6: resumes from step 4
PAUSE_ENV = "DEEPSEEK_TEST_PAUSE_DIR"

try:
    from deepseek.callbacks import Callback
except ImportError:  # pragma: no cover - core is always there in the integration session
    Callback = object  # type: ignore[assignment,misc]


class PauseForKill(Callback):
    """After step ``at``, rank 0 writes ``<$DEEPSEEK_TEST_PAUSE_DIR>/paused`` and every
    rank sleeps until the test kills the job. Does nothing when the variable is unset."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer, outputs, batch, batch_idx) -> None:
        folder = os.environ.get(PAUSE_ENV)
        if not folder or trainer.global_step != self.at:
            return
        trainer.strategy.barrier()  # both ranks finished the step
        if trainer.is_global_zero:
            marker = Path(folder) / "paused"
            marker.write_text(str(trainer.global_step))
        time.sleep(600)  # the test's SIGKILL ends this; the launch timeout bounds it


def config(out: Path) -> dict:
    """examples/moe_lm.yaml, shrunk to a few seconds of work, on the expert strategy with
    a checkpoint every ``SAVE_EVERY`` steps and ``resume: last``."""
    cfg = yaml.safe_load(EXAMPLE.read_text())
    cfg["output_dir"] = str(out)
    cfg["model"].update(d_model=32, n_layers=2, n_heads=2, max_seq_len=32, dense_d_hidden=64,
                        num_experts=4, moe_d_hidden=16)  # fmt: skip
    cfg["data"] = {
        "train": {**cfg["data"]["train"], "seq_len": 32, "max_bytes": 40_000},
        "batch_size": 4,
    }
    cfg["scheduler"]["T_max"] = MAX_STEPS
    trainer = cfg["trainer"]
    trainer.pop("val_every_n_steps", None)
    trainer.update(max_steps=MAX_STEPS, enable_progress_bar=False, resume="last",
                   strategy={"name": "expert", "expert_parallel_size": 2})  # fmt: skip
    callbacks = [cb for cb in cfg["callbacks"] if cb["name"] == "moe_load_balancing"]
    assert callbacks, "examples/moe_lm.yaml no longer balances its experts"
    callbacks += [
        {"name": "csv_logger", "log_every_n_steps": 1},
        {"name": "model_checkpoint", "filepath": str(out / "ckpt" / "step_{step}"),
         "save_freq": SAVE_EVERY},
        {"name": "test_job_moe_kill_resume:PauseForKill", "at": PAUSE_AT},
    ]  # fmt: skip
    cfg["callbacks"] = callbacks
    return cfg


def write_config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "moe_lm_small.yaml"
    path.write_text(yaml.safe_dump(config(folder / "run")))
    return path


def fresh(folder: Path):
    def reset() -> None:
        import shutil

        shutil.rmtree(folder / "run", ignore_errors=True)

    return reset


def env(**extra: str) -> dict[str, str]:
    return _launch.clean_env(pythonpath=[HERE], **extra)


def losses(run: Path) -> dict[int, float]:
    """train_loss by step from the CSV log; a step logged twice (before the kill and
    after the resume) keeps its last row."""
    with open(run / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train_loss")]
    return {int(r["step"]): float(r["train_loss"]) for r in rows}


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(checkpoint / "model.safetensors"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("deepseek.distributed")
    pytest.importorskip("deepseek.moe")
    root = tmp_path_factory.mktemp("moe_kill_resume")

    # 1. Uninterrupted.
    clean = write_config(root / "clean")
    result = _launch.run(_launch.launch_cli(clean), env=env(), cwd=root / "clean",
                         timeout=300, before_attempt=fresh(root / "clean"))  # fmt: skip
    assert result.returncode == 0, _launch.failure(result)

    # 2. Killed between the checkpoints of steps 4 and 8 (a rendezvous that fails on a
    #    loaded machine gets a second try, as _launch.run does).
    killed = write_config(root / "killed")
    run = killed.parent / "run"
    marker = killed.parent / "paused"
    for _ in range(2):
        fresh(killed.parent)()
        marker.unlink(missing_ok=True)
        pause = env(**{PAUSE_ENV: str(killed.parent)})
        proc = _launch.start(_launch.launch_cli(killed), env=pause, cwd=killed.parent)
        paused = _launch.wait_for(marker.exists, proc, timeout=300)
        out, err = _launch.kill_job(proc)  # the launcher and both workers
        if paused:
            break
    else:
        pytest.fail(f"the job never reached step {PAUSE_AT}:\n{out[-3000:]}\n{err[-3000:]}")
    assert marker.read_text() == str(PAUSE_AT)
    assert proc.returncode == -9  # SIGKILL, not a clean exit
    saved = sorted(p.name for p in (run / "ckpt").iterdir() if not p.name.startswith("."))
    assert saved == [f"step_{SAVE_EVERY}"], saved  # steps 5 and 6 are lost work

    # 3. Resumed: the same command, no pause.
    result = _launch.run(_launch.launch_cli(killed), env=env(), cwd=killed.parent, timeout=300)
    assert result.returncode == 0, _launch.failure(result)
    assert "resumed from" in result.stdout + result.stderr
    return {"clean": root / "clean" / "run", "resumed": run}


def test_resumed_run_ends_with_the_uninterrupted_runs_weights(runs) -> None:
    final = f"step_{MAX_STEPS}"
    clean, resumed = (
        weights(runs["clean"] / "ckpt" / final),
        weights(runs["resumed"] / "ckpt" / final),
    )
    assert clean.keys() == resumed.keys()
    experts = [k for k in clean if ".experts." in k]
    assert experts and all(clean[k].shape[0] == 4 for k in experts)  # gathered: all 4 experts
    for key, value in clean.items():
        assert torch.equal(resumed[key], value), key


def test_resumed_run_repeats_the_lost_steps_with_the_same_losses(runs) -> None:
    clean, resumed = losses(runs["clean"]), losses(runs["resumed"])
    assert sorted(clean) == list(range(1, MAX_STEPS + 1))
    # The resumed run logs every step after its checkpoint (the killed attempt's rows
    # may or may not survive in the file: only the steps it repeats are compared).
    assert set(range(SAVE_EVERY + 1, MAX_STEPS + 1)) <= set(resumed), sorted(resumed)
    for step in range(SAVE_EVERY + 1, MAX_STEPS + 1):
        assert resumed[step] == clean[step], (step, resumed[step], clean[step])
