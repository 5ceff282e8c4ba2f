"""Elastic deformation of a 1x128^3 CT volume with its label: deepseek vs the classic
scipy implementation (and MONAI's Rand3DElastic when installed).

Question: how fast is ``deepseek.vision.transforms.RandomElasticDeformation`` (coarse
displacement grid, Gaussian smoothing, trilinear upsampling, one ``grid_sample`` for the
image and one nearest-neighbour ``grid_sample`` for the label)?
Target: >= 5x faster than the scipy reference.

Reference ("classic", as in most medical-imaging code before GPU pipelines): a uniform
random displacement per voxel and axis, ``scipy.ndimage.gaussian_filter`` on each full
resolution field, then ``scipy.ndimage.map_coordinates`` with order 1 for the image and
order 0 for the label. MONAI: ``Rand3DElasticd`` with bilinear/nearest on the same pair.
All three deform with sigma 6 voxels; the time is the median of several calls on the same
phantom (new random field each call), torch threads at their default.

Run: ``python benchmarks/bench_vision_elastic.py [--quick]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    parser.add_argument("--quick", action="store_true", help="64^3 volume, 2 timed calls")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    size = args.size or (64 if args.quick else 128)
    repeats = args.repeats or (2 if args.quick else 5)

    from deepseek.vision.data import make_ct_phantom
    from deepseek.vision.transforms import RandomElasticDeformation

    image, label = make_ct_phantom((size, size, size), seed=0)
    label = label.long()
    alpha, sigma = 20.0 * size / 128, 6.0
    ours = RandomElasticDeformation(alpha=alpha, sigma=sigma, prob=1.0)
    g = torch.Generator().manual_seed(0)
    t_ours = timed(lambda: ours(image, label, generator=g), repeats)
    _, lab = ours(image, label, generator=g)
    assert set(lab.unique().tolist()) <= set(label.unique().tolist())

    image_np, label_np = image.numpy(), label.numpy().astype(np.float32)
    rng = np.random.default_rng(0)
    t_scipy = timed(lambda: scipy_elastic(image_np, label_np, alpha, sigma, rng), repeats)

    rows = [
        ("deepseek RandomElasticDeformation", t_ours),
        ("scipy map_coordinates (reference)", t_scipy),
    ]
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
        rows.append(("MONAI Rand3DElasticd", timed(lambda: monai_t(sample), repeats)))
    except ImportError:
        rows.append(("MONAI Rand3DElasticd (not installed)", float("nan")))

    print(
        f"1x{size}^3 float32 phantom + int64 label, sigma {sigma}, alpha {alpha:g} voxels, "
        f"torch threads {torch.get_num_threads()}; median of {repeats} calls after 1 warm-up\n"
    )
    print("| implementation | time per image+label (s) | speed-up of deepseek |")
    print("|---|---:|---:|")
    for name, t in rows:
        print(f"| {name} | {t:.3f} | {t / t_ours:.1f}x |")


if __name__ == "__main__":
    main()
