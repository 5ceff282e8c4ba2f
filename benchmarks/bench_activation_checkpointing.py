"""Peak training memory and step time with and without activation checkpointing, on CPU.

Question: how much activation memory does ``ds.nn.apply_activation_checkpointing`` save on
a transformer encoder, and what does the recompute cost in step time?
Target: full per-layer checkpointing uses <= 0.5x the peak training memory of no
checkpointing at <= 1.35x the step time.

Model: ``nn.TransformerEncoder`` of 12 ``nn.TransformerEncoderLayer`` (hidden 768, 12 heads,
FFN 3072, dropout 0.1, batch_first), batch 8 x seq 256, AdamW, MSE loss.

Memory: each mode runs in a fresh subprocess (``--child MODE``) so that one mode's
allocations cannot hide another's. Peak training memory is the peak RSS during one
training step minus the RSS just before it. By then a warm-up step has allocated the
optimizer state and gradients, so this is what a step adds on top of weights, gradients
and optimizer state: mostly saved activations and temporaries. The peak is reset through
``/proc/self/clear_refs``, and glibc is told to return large freed blocks to the OS
(``MALLOC_MMAP_THRESHOLD_``) so that RSS follows live memory instead of malloc's cache.

Time: one more subprocess (``--child time``, default malloc) holds a model per mode and
runs their steps in turn, round after round, so load from other processes on a shared
machine hits every mode alike; the table shows the median step.

Run: ``python benchmarks/bench_activation_checkpointing.py [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MODES = ("none", "full", "selective")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def make_step(mode: str, layers: int):
    """A training step closure for one mode; each mode gets the same weights and data."""
    import torch
    from torch import nn

    import deepseek as ds

    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(768, 12, 3072, dropout=0.1, batch_first=True)
    model = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
    if mode == "full":
        ds.nn.apply_activation_checkpointing(model, True)
    elif mode == "selective":
        ds.nn.apply_activation_checkpointing(model, {"every_n": 1, "selective": True})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(8, 256, 768)
    target = torch.randn(8, 256, 768)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), target).backward()
        optimizer.step()

    return step


def measure_memory(mode: str, layers: int) -> dict:
    step = make_step(mode, layers)
    step()  # warm-up: allocates gradients and optimizer state
    before = _status_kib("VmRSS")
    reset = _reset_peak_rss()
    step()
    # Not reset, VmHWM is the lifetime peak; the warm-up step peaked about as high.
    peak = _status_kib("VmHWM")
    return {"peak_mib": (peak - before) / 1024, "peak_reset": reset}


def measure_time(layers: int, steps: int) -> dict:
    """Step times of all modes in one process, interleaved so that load changes on a
    shared machine hit every mode alike."""
    runs = {mode: make_step(mode, layers) for mode in MODES}
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_ in range(steps + 1):
        for mode, step in runs.items():
            start = time.perf_counter()
            step()
            if round_:  # round 0 is the warm-up
                times[mode].append(time.perf_counter() - start)
    return {mode: statistics.median(t) for mode, t in times.items()}


def child(what: str, layers: int, steps: int) -> dict:
    env = dict(os.environ)
    if what != "time":
        # Freed blocks of >= 128 KiB go straight back to the OS, so RSS follows live memory.
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    cmd = [sys.executable, __file__, "--child", what, "--layers", str(layers)]
    cmd += ["--steps", str(steps)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{what} run failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 layers, 2 timed steps")
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per mode")
    parser.add_argument("--child", choices=(*MODES, "time"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    layers = args.layers or (4 if args.quick else 12)
    steps = args.steps or (2 if args.quick else 3)
    if args.child == "time":
        print(json.dumps(measure_time(layers, steps)))
        return
    if args.child:
        print(json.dumps(measure_memory(args.child, layers)))
        return

    memory = {mode: child(mode, layers, steps) for mode in MODES}
    step_s = child("time", layers, steps)
    ref_mib, ref_s = memory["none"]["peak_mib"], step_s["none"]
    print(
        f"{layers}-layer TransformerEncoder, hidden 768, seq 256, batch 8, AdamW, "
        f"torch threads: default; step time = median of {steps} interleaved steps "
        "after 1 warm-up\n"
    )
    print("| mode | peak train memory (MiB) | ratio vs none | step time (s) | ratio vs none |")
    print("|---|---:|---:|---:|---:|")
    for mode in MODES:
        mib, sec = memory[mode]["peak_mib"], step_s[mode]
        print(f"| {mode} | {mib:.0f} | {mib / ref_mib:.2f}x | {sec:.2f} | {sec / ref_s:.2f}x |")
    if not all(m["peak_reset"] for m in memory.values()):
        print("\n(/proc/self/clear_refs unavailable: peaks are lifetime maxima)")


if __name__ == "__main__":
    main()
