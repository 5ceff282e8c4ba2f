"""Compression on CPU: static int8 (torchao PT2E, compiled) and 50% channel pruning vs fp32.

Models: the quickstart CNN (8x8 digits) and ResNet-18 from deepseek-vision (random
weights: size and latency do not depend on them). For each: fp32 latency, int8 latency
(``calibrate`` + ``convert``, run through ``torch.compile`` so the int8 kernels are used),
and the pruned model's latency, at batch 1 and 32, on 1 and 2 threads; file sizes
(safetensors fp32 vs the int8 ``.pt2`` archive); parameters after pruning. Each latency is
the median of ``--repeats`` forward passes after warm-up; ratios are fp32 / other (higher
is better), measured in the same run. The header names the CPU and its int8 features.

    python benchmarks/bench_quant_compression.py [--quick] [--models cnn,resnet18]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from deepseek.pruning import prune
from deepseek.quantization import QuantConfig, calibrate, convert, save

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))


def cpu_header() -> str:
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8"]
    features = ", ".join(f"{f}={'yes' if f in flags else 'no'}" for f in wanted)
    return f"CPU: {name} ({os.cpu_count()} cores); int8 features: {features}"


def median_ms(fns: list, x: torch.Tensor, repeats: int) -> list[float]:
    """Median time of each function on ``x``, timed round-robin so that load changes on
    a shared machine hit every implementation alike."""
    times: list[list[float]] = [[] for _ in fns]
    with torch.inference_mode():
        for fn in fns:
            for _ in range(3):
                fn(x)
        for _ in range(repeats):
            for i, fn in enumerate(fns):
                start = time.perf_counter()
                fn(x)
                times[i].append(time.perf_counter() - start)
    return [1000 * sorted(t)[len(t) // 2] for t in times]


def build(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    if name == "cnn":
        from quickstart import SmallCNN

        return SmallCNN().eval(), (1, 8, 8)
    from deepseek.vision.networks import resnet18

    return resnet18(num_classes=1000).eval(), (3, 224, 224)


def file_mb(path: Path) -> float:
    return path.stat().st_size / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, ResNet at 112px")
    parser.add_argument("--models", default="cnn,resnet18")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (5 if args.quick else 20)
    print(cpu_header())
    print(f"torch {torch.__version__}; load average {os.getloadavg()[0]:.1f} at start\n")
    rows = []
    for name in args.models.split(","):
        model, shape = build(name)
        if args.quick and name == "resnet18":
            shape = (3, 112, 112)
        calib = [torch.randn(8, *shape) for _ in range(4)]
        int8 = convert(calibrate(model, calib, QuantConfig(mode="static")))
        pruned = prune(model, amount=0.5, example_inputs=torch.randn(1, *shape))
        with tempfile.TemporaryDirectory() as tmp:
            from safetensors.torch import save_file

            fp32_path = Path(tmp) / "fp32.safetensors"
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, fp32_path)
            int8_path = save(int8, Path(tmp) / "int8.pt2", torch.randn(2, *shape))
            size_ratio = file_mb(int8_path) / file_mb(fp32_path)
            sizes = f"{file_mb(fp32_path):.2f} MB -> {file_mb(int8_path):.2f} MB"
        params = pruned.pruning_report.param_ratio
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for batch in (1, 32):
                x = torch.randn(batch, *shape)
                fp32, q, p = median_ms([model, int8, pruned], x, repeats)
                rows.append(
                    (
                        name,
                        threads,
                        batch,
                        fp32,
                        q,
                        fp32 / q,
                        p,
                        fp32 / p,
                        sizes,
                        size_ratio,
                        params,
                    )
                )
    print(
        "| model | threads | batch | fp32 ms | int8 ms | int8 speed-up | pruned 50% ms "
        "| pruned speed-up | file fp32 -> int8 | int8 size ratio | pruned params ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.2f}x | {r[6]:.2f} "
            f"| {r[7]:.2f}x | {r[8]} | {r[9]:.3f} | {r[10]:.3f} |"
        )


if __name__ == "__main__":
    main()
