"""U-Net++ 3-D training step at 64^3 patches, batch 2: memory and speed with and without
activation checkpointing, on CPU.

Question: what do ``deepseek.nn.apply_activation_checkpointing`` (every ConvBlock / UpBlock
of the network, found automatically) save and cost on a volumetric U-Net++?
Target: <= 0.5x the peak training memory at <= 1.4x the step time.

Model: ``UNetPlusPlus(spatial_dims=3, in_channels=1, out_channels=3, features=(16, 32, 64,
128))``, instance norm, ``DiceFocalLoss(softmax=True, to_onehot_y=True)``, AdamW.

Memory, two ways, each mode in a fresh subprocess so one mode's allocations cannot hide
another's: (1) tensors saved for backward during the forward pass, counted exactly with
``torch.autograd.graph.saved_tensors_hooks`` (distinct storages); (2) the peak RSS of one
training step above the RSS before it (after a warm-up step allocated gradients and
optimizer state; peak reset through ``/proc/self/clear_refs``; glibc returns freed large
blocks to the OS via ``MALLOC_MMAP_THRESHOLD_``). Time: both modes in one process, steps
interleaved round by round so load from other processes hits both alike; median step.

Run: ``python benchmarks/bench_vision_unetpp_checkpointing.py [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MODES = ("none", "checkpointed")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def make_step(mode: str, size: int, batch: int, features: tuple[int, ...]):
    import torch

    import deepseek as ds
    from deepseek.vision.losses import DiceFocalLoss
    from deepseek.vision.networks import UNetPlusPlus

    torch.manual_seed(0)
    model = UNetPlusPlus(3, 1, 3, features=features)
    if mode == "checkpointed":
        ds.nn.apply_activation_checkpointing(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = DiceFocalLoss(to_onehot_y=True, softmax=True)
    x = torch.randn(batch, 1, size, size, size)
    y = torch.randint(0, 3, (batch, 1, size, size, size))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    def saved_bytes() -> int:
        storages: dict[int, int] = {}

        def pack(t):
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_fn(model(x), y)
        loss.backward()
        return sum(storages.values())

    return step, saved_bytes


def measure_memory(mode: str, size: int, batch: int, features) -> dict:
    step, saved_bytes = make_step(mode, size, batch, features)
    step()
    saved = saved_bytes()
    before = _status_kib("VmRSS")
    reset = _reset_peak_rss()
    step()
    peak = _status_kib("VmHWM")
    return {"saved_mib": saved / 2**20, "peak_mib": (peak - before) / 1024, "reset": reset}


def measure_time(size: int, batch: int, features, steps: int) -> dict:
    runs = {mode: make_step(mode, size, batch, features)[0] for mode in MODES}
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_ in range(steps + 1):
        for mode, step in runs.items():
            start = time.perf_counter()
            step()
            if round_:
                times[mode].append(time.perf_counter() - start)
    return {mode: statistics.median(t) for mode, t in times.items()}


def child(what: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    if what != "time":
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    cmd = [sys.executable, __file__, "--child", what, "--size", str(args.size)]
    cmd += ["--batch", str(args.batch), "--steps", str(args.steps)]
    cmd += ["--features", *map(str, args.features)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{what} run failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32^3, 2 timed steps")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--features", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--child", choices=(*MODES, "time"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.size = args.size or (32 if args.quick else 64)
    args.steps = args.steps or (2 if args.quick else 3)
    features = tuple(args.features)
    if args.child == "time":
        print(json.dumps(measure_time(args.size, args.batch, features, args.steps)))
        return
    if args.child:
        print(json.dumps(measure_memory(args.child, args.size, args.batch, features)))
        return

    import torch

    memory = {mode: child(mode, args) for mode in MODES}
    step_s = child("time", args)
    ref = memory["none"]
    print(
        f"UNetPlusPlus 3-D features {features}, {args.size}^3 patches, batch {args.batch}, "
        f"DiceFocal, AdamW, torch threads {torch.get_num_threads()}; step time = median of "
        f"{args.steps} interleaved steps after 1 warm-up\n"
    )
    print(
        "| mode | saved for backward (MiB) | ratio | peak step RSS (MiB) | ratio | "
        "step (s) | samples/s | time ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for mode in MODES:
        m, s = memory[mode], step_s[mode]
        print(
            f"| {mode} | {m['saved_mib']:.0f} | {m['saved_mib'] / ref['saved_mib']:.2f}x | "
            f"{m['peak_mib']:.0f} | {m['peak_mib'] / ref['peak_mib']:.2f}x | {s:.2f} | "
            f"{args.batch / s:.2f} | {s / step_s['none']:.2f}x |"
        )
    if not all(m["reset"] for m in memory.values()):
        print("\n(/proc/self/clear_refs unavailable: RSS peaks are lifetime maxima)")


if __name__ == "__main__":
    main()
