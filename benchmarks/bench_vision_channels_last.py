"""Channels-last memory format for the vision U-Nets on this CPU: forward+backward time of
``UNet`` / ``UNetPlusPlus`` (2-D and 3-D) in ``torch.contiguous_format`` vs
``torch.channels_last`` (2-D) / ``torch.channels_last_3d`` (3-D).

Question (issue 9, item 1: "channels-last where it helps"): does converting the model and
its input with ``model.to(memory_format=...)`` / ``x.to(memory_format=...)`` make a
training step faster on this machine's oneDNN CPU kernels? Each configuration times the
same weights and input in both formats, interleaved round by round, median wall time and
median process CPU time (all threads) of the rounds after one warm-up round; outputs are
compared (same function, different layout). On a shared machine read the CPU columns.

Run: ``python benchmarks/bench_vision_channels_last.py [--quick] [--norm instance|batch]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch


def header() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return (
        f"torch {torch.__version__}, {cpu}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, oneDNN {torch.backends.mkldnn.is_available()}, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, 2 timed rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--norm", default="instance", choices=("instance", "batch", "group"))
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    size3, size2 = (32, 128) if args.quick else (64, 256)

    from deepseek.vision.networks import UNet, UNetPlusPlus

    configs = [
        ("UNet 3-D", UNet, 3, (16, 32, 64, 128), (2, 1, size3, size3, size3)),
        ("UNet++ 3-D", UNetPlusPlus, 3, (16, 32, 64, 128), (2, 1, size3, size3, size3)),
        ("UNet 2-D", UNet, 2, (32, 64, 128, 256), (8, 1, size2, size2)),
        ("UNet++ 2-D", UNetPlusPlus, 2, (32, 64, 128, 256), (8, 1, size2, size2)),
    ]
    print(header())
    print(
        f"norm {args.norm}, features as listed, forward + (output^2).mean() backward; "
        f"median of {rounds} interleaved rounds after 1 warm-up round\n"
    )
    print(
        "| network | input | contiguous wall (s) | channels-last wall (s) | ratio "
        "| contiguous CPU (s) | channels-last CPU (s) | CPU ratio | max output diff |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, cls, dims, features, shape in configs:
        torch.manual_seed(0)
        net = cls(
            spatial_dims=dims, in_channels=1, out_channels=3, features=features, norm=args.norm
        )
        x = torch.randn(shape)
        fmt = torch.channels_last_3d if dims == 3 else torch.channels_last
        variants = {
            "contiguous": (net, x),
            "channels_last": (
                cls(
                    spatial_dims=dims,
                    in_channels=1,
                    out_channels=3,
                    features=features,
                    norm=args.norm,
                ).to(memory_format=fmt),
                x.to(memory_format=fmt),
            ),
        }
        variants["channels_last"][0].load_state_dict(net.state_dict())
        outs = {}
        times: dict[str, list[float]] = {k: [] for k in variants}
        cpu: dict[str, list[float]] = {k: [] for k in variants}
        for round_ in range(rounds + 1):
            for key, (model, inp) in variants.items():
                model.zero_grad(set_to_none=True)
                start, start_cpu = time.perf_counter(), time.process_time()
                out = model(inp)
                out.square().mean().backward()
                if round_:
                    times[key].append(time.perf_counter() - start)
                    cpu[key].append(time.process_time() - start_cpu)
                outs[key] = out.detach()
        diff = (outs["contiguous"] - outs["channels_last"]).abs().max().item()
        t_c, t_l = (statistics.median(times[k]) for k in ("contiguous", "channels_last"))
        c_c, c_l = (statistics.median(cpu[k]) for k in ("contiguous", "channels_last"))
        print(
            f"| {name} | {'x'.join(map(str, shape))} | {t_c:.3f} | {t_l:.3f} | "
            f"{t_l / t_c:.2f}x | {c_c:.3f} | {c_l:.3f} | {c_l / c_c:.2f}x | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
