"""Elastic deformation of a 1x128^3 CT volume with its label: deepseek vs the classic
scipy implementation (and MONAI's Rand3DElastic when installed).

Question: how fast is ``deepseek.vision.transforms.RandomElasticDeformation`` (noise on a
coarse control grid, separable Gaussian smoothing there, the sampling grid upsampled axis
by axis straight into ``grid_sample``'s layout, one bilinear ``grid_sample`` for the image
split over torch's threads, the label gathered by nearest-neighbour index)?
Target: >= 5x faster than the scipy reference. Run it with ``--threads 1`` too: scipy uses
one core, and on a busy machine 2 OpenMP threads can be slower than 1.

Reference ("classic", as in most medical-imaging code before GPU pipelines): a uniform
random displacement per voxel and axis, ``scipy.ndimage.gaussian_filter`` on each full
resolution field, then ``scipy.ndimage.map_coordinates`` with order 1 for the image and
order 0 for the label (scipy is single-threaded). MONAI: ``Rand3DElasticd`` with
bilinear/nearest on the same pair. All three deform with sigma 6 voxels and a new random
field per call. The implementations are interleaved call by call for several rounds (a
load spike hits all of them alike) and each row reports the median wall time and the
median CPU time of the process (all threads); the header records the CPU, the thread count
and the load average before and after, so a number from a busy machine shows as one.

Run: ``python benchmarks/bench_vision_elastic.py [--quick] [--rounds N] [--threads N]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def scipy_elastic(image: np.ndarray, label: np.ndarray, alpha: float, sigma: float, rng):
    from scipy.ndimage import gaussian_filter, map_coordinates

    shape = image.shape[1:]
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    coords = []
    for axis in range(3):
        field = gaussian_filter(rng.uniform(-1, 1, shape).astype(np.float32), sigma)
        field *= alpha / max(np.abs(field).max(), 1e-12)
        coords.append(grid[axis] + field)
    out = map_coordinates(image[0], coords, order=1, mode="nearest")[None]
    lab = map_coordinates(label[0], coords, order=0, mode="nearest")[None]
    return out, lab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64^3 volume, 3 rounds")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    size = args.size or (64 if args.quick else 128)
    rounds = args.rounds or (3 if args.quick else 9)
    if args.threads:
        torch.set_num_threads(args.threads)

    from deepseek.vision.data import make_ct_phantom
    from deepseek.vision.transforms import RandomElasticDeformation

    image, label = make_ct_phantom((size, size, size), seed=0)
    label = label.long()
    alpha, sigma = 20.0 * size / 128, 6.0
    ours = RandomElasticDeformation(alpha=alpha, sigma=sigma, prob=1.0)
    g = torch.Generator().manual_seed(0)
    _, lab = ours(image, label, generator=g)
    assert set(lab.unique().tolist()) <= set(label.unique().tolist())
    image_np, label_np = image.numpy(), label.numpy().astype(np.float32)
    rng = np.random.default_rng(0)

    calls = {
        "deepseek RandomElasticDeformation": lambda: ours(image, label, generator=g),
        "scipy map_coordinates (reference)": lambda: scipy_elastic(
            image_np, label_np, alpha, sigma, rng
        ),
    }
    try:
        from monai.transforms import Rand3DElasticd

        monai_t = Rand3DElasticd(
            keys=("image", "label"),
            sigma_range=(sigma, sigma),
            magnitude_range=(alpha, alpha),
            prob=1.0,
            mode=("bilinear", "nearest"),
            padding_mode="border",
        )
        monai_t.set_random_state(0)
        sample = {"image": image, "label": label}
        calls["MONAI Rand3DElasticd"] = lambda: monai_t(sample)
    except ImportError:
        pass

    load_before = load()
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(rounds + 1):  # round 0 warms up
        for name, fn in calls.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            if round_:
                wall[name].append(time.perf_counter() - w)
                cpu[name].append(time.process_time() - c)
    t_ours = statistics.median(wall["deepseek RandomElasticDeformation"])

    print(
        f"{machine()}; torch threads {torch.get_num_threads()}; load average (1, 5, 15 min) "
        f"{load_before} before, {load()} after\n"
        f"1x{size}^3 float32 phantom + int64 label, sigma {sigma}, alpha {alpha:g} voxels; "
        f"median of {rounds} interleaved rounds after 1 warm-up round\n"
    )
    print("| implementation | wall per image+label (s) | CPU time (s) | speed-up of deepseek |")
    print("|---|---:|---:|---:|")
    for name in calls:
        t = statistics.median(wall[name])
        print(f"| {name} | {t:.3f} | {statistics.median(cpu[name]):.3f} | {t / t_ours:.1f}x |")
    if "MONAI Rand3DElasticd" not in calls:
        print("| MONAI Rand3DElasticd (not installed) | | | |")


if __name__ == "__main__":
    main()
