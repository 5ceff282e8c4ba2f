"""Work lost when a run is killed at a random point and resumed with ``resume="last"``.

For each ``save_freq`` (optimizer steps between checkpoints) a training process is killed
with SIGKILL at a random step, then resumed; the table shows the steps redone (killed at
minus resumed from: bounded by ``save_freq``), the time a resume takes to reach its first
step, and the training throughput cost of checkpointing that often, against the same
run with no checkpoints (the reference, measured in the same run).

    python benchmarks/bench_work_lost.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

WORKER = textwrap.dedent(
    """
    import sys, time, torch
    from torch import nn
    from torch.utils.data import TensorDataset
    from deepseek.callbacks import Callback, ModelCheckpoint
    from deepseek.training import Trainer

    out, save_freq, resume, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])

    class Announce(Callback):
        def on_fit_start(self, trainer):
            print(f"START {trainer.global_step} {time.time()}", flush=True)
        def on_train_batch_end(self, trainer, outputs, batch, batch_idx):
            print(f"STEP {trainer.global_step}", flush=True)

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(4096, 64), torch.randint(0, 10, (4096,)))
    model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, 10))
    callbacks = [Announce()]
    if save_freq:
        callbacks.append(ModelCheckpoint(out + "/ckpt/step_{step}", save_freq=save_freq,
                                         save_top_k=1))
    trainer = Trainer(model, torch.optim.AdamW, {"lr": 1e-3}, train_data=data, batch_size=32,
                      loss_fn=nn.functional.cross_entropy, max_steps=steps, seed=0,
                      precision="fp32", enable_progress_bar=False, default_root_dir=out,
                      callbacks=callbacks)
    start = time.perf_counter()
    trainer.fit(resume=None if resume == "none" else resume)
    print(f"DONE {time.perf_counter() - start}", flush=True)
    """
)


def run_to_end(script: Path, out: Path, save_freq: int, steps: int) -> float:
    result = subprocess.run(
        [sys.executable, str(script), str(out), str(save_freq), "none", str(steps)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout.strip().splitlines()[-1].split()[1])


def kill_and_resume(script: Path, out: Path, save_freq: int, steps: int, kill_at: int):
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out), str(save_freq), "none", str(steps)],
        stdout=subprocess.PIPE,
        text=True,
    )
    killed_at = 0
    for line in proc.stdout:
        if line.startswith("STEP") and int(line.split()[1]) >= kill_at:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = int(line.split()[1])
            break
    proc.wait()
    started = time.time()
    result = subprocess.run(
        [sys.executable, str(script), str(out), str(save_freq), "last", str(steps)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    resumed_from = int(next(ln for ln in lines if ln.startswith("START")).split()[1])
    first_step = next(i for i, ln in enumerate(lines) if ln.startswith("STEP"))
    # Wall time from launching the resume to its first finished step, imports included.
    start_line = next(ln for ln in lines if ln.startswith("START"))
    to_fit_start = float(start_line.split()[2]) - started
    return killed_at, resumed_from, to_fit_start, first_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    steps = 300 if args.quick else 1000
    freqs = [10, 50] if args.quick else [10, 50, 200]
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "worker.py"
        script.write_text(WORKER)
        reference = run_to_end(script, Path(tmp) / "ref", 0, steps)
        rows = []
        for freq in freqs:
            seconds = run_to_end(script, Path(tmp) / f"full{freq}", freq, steps)
            kill_at = rng.randint(freq + 1, steps - 1)
            killed, resumed, startup, _ = kill_and_resume(
                script, Path(tmp) / f"kill{freq}", freq, steps, kill_at
            )
            rows.append((freq, seconds, killed, resumed, startup))
    print(f"\nWork lost after SIGKILL at a random step; MLP 64-512-512-10, {steps} steps\n")
    print(
        "| save_freq (steps) | run time (s) | ratio vs no checkpoints | killed at step | "
        "resumed from step | steps redone | resume start-up (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    print(f"| none | {reference:.2f} | 1.000 | - | - | - | - |")
    for freq, seconds, killed, resumed, startup in rows:
        print(
            f"| {freq} | {seconds:.2f} | {seconds / reference:.3f} | {killed} | {resumed} | "
            f"{killed - resumed} | {startup:.2f} |"
        )


if __name__ == "__main__":
    main()
