"""Checkpoint save/load time and size: deepseek.checkpoint vs plain torch.save / torch.load.

A ~100M-parameter stack of Linear layers (``--quick``: ~10M) and its AdamW state after
one step. deepseek writes a directory (safetensors weights + trainer_state.pt + meta.json,
every file fsynced, then renamed into place); the reference writes one torch.save file
with no fsync, so one row also gives the reference an fsync for a like-for-like durable
save. deepseek also hashes every file (SHA-256, recorded in meta.json) and verifies the
hashes on load; the ``verify=False`` rows show what that check costs. Loads are measured
with every tensor read (safetensors maps the file lazily, so loading alone would read
nothing). Files are read back from a warm page cache.
``--dir /dev/shm`` takes the disk out and leaves the format's own cost.

    python benchmarks/bench_checkpoint.py [--quick] [--repeats N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from deepseek.checkpoint import load_checkpoint, load_weights, save_checkpoint


def build(width: int, depth: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(torch.randn(4, width)).sum().backward()
    opt.step()  # creates exp_avg / exp_avg_sq for every parameter
    opt.zero_grad(set_to_none=True)
    return model, opt


def read_all(obj) -> None:
    """Touch every tensor so lazily mapped data is really read."""
    if isinstance(obj, torch.Tensor):
        obj.sum()
    elif isinstance(obj, dict):
        for value in obj.values():
            read_all(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            read_all(value)


def timed_pair(ours: Callable[[], object], ref: Callable[[], object], repeats: int):
    """Median seconds of each; runs alternate so that disk and machine load hit both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((ours, times[0]), (ref, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def torch_save(obj, file: Path, fsync: bool = False) -> None:
    with open(file, "wb") as f:
        torch.save(obj, f)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~10M parameters instead of ~100M")
    parser.add_argument("--repeats", type=int, default=5, help="median of this many runs")
    parser.add_argument("--dir", default=None, help="where to write (default: system temp dir)")
    args = parser.parse_args()

    width, depth = (1024, 10) if args.quick else (2048, 24)
    model, opt = build(width, depth)
    params = sum(p.numel() for p in model.parameters())
    model_sd, opt_sd = model.state_dict(), opt.state_dict()
    work = Path(tempfile.mkdtemp(prefix="bench-ckpt-", dir=args.dir))
    ours_w, ours_f = work / "weights", work / "full"
    ref_w, ref_f = work / "weights.pt", work / "full.pt"
    r = args.repeats

    def load_full_ours() -> None:
        read_all(load_checkpoint(ours_f).__dict__)

    def load_full_unverified() -> None:
        read_all(load_checkpoint(ours_f, verify=False).__dict__)

    def load_full_ref() -> None:
        read_all(torch.load(ref_f, weights_only=True))

    def load_weights_ref() -> None:
        model.load_state_dict(torch.load(ref_w, weights_only=True)["model"])

    try:
        full_ref = {"model": model_sd, "optimizer": opt_sd}
        measured = {
            "save weights-only": timed_pair(
                lambda: save_checkpoint(ours_w, model_sd),
                lambda: torch_save({"model": model_sd}, ref_w),
                r,
            ),
            "save full (model + AdamW)": timed_pair(
                lambda: save_checkpoint(ours_f, model_sd, {"optimizer": opt_sd}),
                lambda: torch_save(full_ref, ref_f),
                r,
            ),
            "save full, reference also fsyncs": timed_pair(
                lambda: save_checkpoint(ours_f, model_sd, {"optimizer": opt_sd}),
                lambda: torch_save(full_ref, ref_f, fsync=True),
                r,
            ),
            "load_weights into the model": timed_pair(
                lambda: load_weights(model, ours_w), load_weights_ref, r
            ),
            "load_weights, verify=False": timed_pair(
                lambda: load_weights(model, ours_w, verify=False), load_weights_ref, r
            ),
            "load full, every tensor read": timed_pair(load_full_ours, load_full_ref, r),
            "load full, verify=False": timed_pair(load_full_unverified, load_full_ref, r),
        }
        sizes = [
            ("weights-only", dir_size(ours_w), ref_w.stat().st_size),
            ("full", dir_size(ours_f), ref_f.stat().st_size),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\n{params / 1e6:.1f}M parameters ({depth} x Linear({width}, {width})), AdamW state "
        f"after one step; median of {r}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads\n"
    )
    print("| operation | deepseek (s) | torch.save/load (s) | ratio |")
    print("|---|---|---|---|")
    for name, (ours, ref) in measured.items():
        print(f"| {name} | {ours:.3f} | {ref:.3f} | {ours / ref:.2f}x |")
    print("\n| checkpoint | deepseek on disk (MB) | torch.save file (MB) | ratio |")
    print("|---|---|---|---|")
    for name, ours, ref in sizes:
        print(f"| {name} | {ours / 1e6:.1f} | {ref / 1e6:.1f} | {ours / ref:.3f}x |")


if __name__ == "__main__":
    main()
