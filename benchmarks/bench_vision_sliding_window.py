"""Sliding-window inference on a 256x256x128 volume: peak memory vs whole-volume inference,
and voxels per second (with MONAI's sliding_window_inference on the same network when
installed).

Question: does ``deepseek.vision.inferers.sliding_window_inference`` keep memory bounded on
volumes larger than the network's window, and at what throughput?
Network: ``UNet(spatial_dims=3, in_channels=1, out_channels=3, features=(8, 16, 32, 64))``
in eval mode under ``torch.no_grad()``; windows of 96^3, overlap 0.25, Gaussian blending,
sw_batch_size 2. Each mode runs in a fresh subprocess; memory is the peak RSS above the RSS
before the call (glibc returns freed large blocks to the OS via ``MALLOC_MMAP_THRESHOLD_``).
Voxels/s counts the input volume's voxels, not the (overlapping) windows'.

Run: ``python benchmarks/bench_vision_sliding_window.py [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

MODES = ("whole volume", "deepseek sliding window", "MONAI sliding window")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_mode(mode: str, shape: tuple[int, ...], roi: tuple[int, ...]) -> dict:
    import torch

    from deepseek.vision.inferers import sliding_window_inference
    from deepseek.vision.networks import UNet

    torch.manual_seed(0)
    net = UNet(3, 1, 3, features=(8, 16, 32, 64)).eval()
    x = torch.randn(1, 1, *shape)
    if mode == "whole volume":
        call = lambda: net(x)  # noqa: E731
    elif mode == "deepseek sliding window":
        call = lambda: sliding_window_inference(x, roi, 2, net, overlap=0.25)  # noqa: E731
    else:
        try:
            from monai.inferers import sliding_window_inference as monai_swi
        except ImportError:
            return {"skipped": True}
        call = lambda: monai_swi(x, roi, 2, net, overlap=0.25)  # noqa: E731
    with torch.no_grad():
        before = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        start = time.perf_counter()
        out = call()
        seconds = time.perf_counter() - start
        peak = _status_kib("VmHWM")
    assert out.shape == (1, 3, *shape)
    return {"peak_mib": (peak - before) / 1024, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128x128x64 volume, 64^3 windows")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = (128, 128, 64) if args.quick else (256, 256, 128)
    roi = (64, 64, 64) if args.quick else (96, 96, 96)
    if args.child:
        print(json.dumps(run_mode(args.child, shape, roi)))
        return
    results = {}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    for mode in MODES:
        cmd = [sys.executable, __file__, "--child", mode] + (["--quick"] if args.quick else [])
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"{mode} failed:\n{out.stderr}")
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])

    import torch

    voxels = shape[0] * shape[1] * shape[2]
    ref = results["whole volume"]
    print(
        f"UNet 3-D (8, 16, 32, 64), input 1x1x{'x'.join(map(str, shape))}, windows "
        f"{'x'.join(map(str, roi))}, overlap 0.25, gaussian, sw_batch_size 2, "
        f"torch threads {torch.get_num_threads()}, one call each\n"
    )
    print(
        "| inference | peak memory above baseline (MiB) | vs whole volume | time (s) | voxels/s |"
    )
    print("|---|---:|---:|---:|---:|")
    for mode, r in results.items():
        if r.get("skipped"):
            print(f"| {mode} (not installed) | | | | |")
            continue
        print(
            f"| {mode} | {r['peak_mib']:.0f} | {r['peak_mib'] / ref['peak_mib']:.2f}x | "
            f"{r['seconds']:.1f} | {voxels / r['seconds']:.3g} |"
        )


if __name__ == "__main__":
    main()
