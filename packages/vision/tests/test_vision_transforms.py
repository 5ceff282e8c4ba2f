"""Transforms: correctness against direct computations, labels never blend, seeded
reproducibility, worker safety, dict composition, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from deepseek.vision.transforms import (
    CenterCrop,
    Compose,
    CTWindow,
    NormalizeIntensity,
    RandomAffine,
    RandomCrop,
    RandomCropByPosNegLabel,
    RandomElasticDeformation,
    RandomFlip,
    RandomGaussianNoise,
    RandomRotate90,
    ScaleIntensityRange,
)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def blobs(shape, values=(0, 3, 7)) -> torch.Tensor:
    """A label volume of big blocks holding the given values."""
    label = torch.zeros((1, *shape), dtype=torch.long)
    label[(0, *[slice(s // 4, s // 2) for s in shape])] = values[1]
    label[(0, *[slice(s // 2, 3 * s // 4) for s in shape])] = values[2]
    return label


@pytest.mark.parametrize("shape", [(24, 20, 28), (40, 36)])
def test_elastic_labels_never_blend_and_image_moves(shape):
    label = blobs(shape)
    image = label.float() + 0.1 * torch.randn(label.shape, generator=seeded(1))
    t = RandomElasticDeformation(alpha=(4, 6), sigma=(3, 4), prob=1.0)
    out, lab = t(image, label, generator=seeded(0))
    assert out.shape == image.shape and lab.shape == label.shape and lab.dtype == label.dtype
    assert set(lab.unique().tolist()) <= {0, 3, 7}  # nearest neighbour: no 1.5, no 5
    assert not torch.equal(lab, label)
    # The image moved with the label: where the label is 7 the image is close to 7.
    assert (out[lab == 7] - 7).abs().median() < 1.0


def test_elastic_displacement_is_what_grid_sample_applies():
    shape = (20, 24, 28)
    t = RandomElasticDeformation(alpha=3.0, sigma=4.0, prob=1.0)
    disp = t.displacement(shape, seeded(5), torch.device("cpu"))
    assert disp.shape == (3, *shape)
    assert disp.abs().max().item() == pytest.approx(3.0, rel=0.05)  # alpha is the peak
    # Coordinate images: sampling them at the deformed grid returns the sampled positions.
    coords = torch.stack(
        torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij")
    )
    out = t(coords, generator=seeded(5))
    inner = (slice(None), slice(4, -4), slice(4, -4), slice(4, -4))
    torch.testing.assert_close(out[inner], (coords + disp)[inner], atol=1e-3, rtol=0)


def _padded_conv_smooth(field, sigma, mode):
    """Reference: per axis, pad with ``mode`` and convolve with the sampled Gaussian."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=field.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    for axis in range(2, field.dim()):
        moved = field.movedim(axis, -1)
        flat = moved.reshape(-1, 1, moved.shape[-1])
        flat = torch.nn.functional.pad(flat, (radius, radius), mode=mode)
        out = torch.nn.functional.conv1d(flat, kernel.view(1, 1, -1))
        field = out.reshape(moved.shape).movedim(-1, axis)
    return field


@pytest.mark.parametrize(
    ("shape", "sigma", "mode"),
    [((9, 11, 13), 2.0, "reflect"), ((12, 10), 1.5, "reflect"), ((5, 20, 20), 2.0, "replicate")],
)
def test_gaussian_smoothing_equals_padded_convolution(shape, sigma, mode):
    from deepseek.vision.transforms.spatial import gaussian_smooth

    field = torch.rand(1, len(shape), *shape, generator=seeded(0))
    torch.testing.assert_close(
        gaussian_smooth(field, sigma), _padded_conv_smooth(field, sigma, mode), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize(
    ("coarse", "shape"), [((5, 6, 7), (33, 20, 41)), ((9, 4), (8, 30)), ((3, 3, 2), (1, 5, 9))]
)
def test_grid_upsampling_equals_interpolate(coarse, shape):
    from deepseek.vision.transforms.spatial import _upsample_channels_last

    field = torch.randn(1, len(shape), *coarse, generator=seeded(0))
    mode = "trilinear" if len(shape) == 3 else "bilinear"
    expected = torch.nn.functional.interpolate(field, size=shape, mode=mode, align_corners=True)
    grid = _upsample_channels_last(field, shape)
    assert grid.shape == (1, *shape, len(shape)) and grid.is_contiguous()
    torch.testing.assert_close(grid, expected.movedim(1, -1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(2, 40, 36, 32), (1, 33, 35, 37), (3, 256, 200)])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize(
    ("label_dtype", "classes"), [(torch.int64, 5), (torch.uint8, 5), (torch.int64, 1000)]
)
def test_resample_on_cpu_threads_equals_grid_sample(shape, padding_mode, label_dtype, classes):
    """The CPU path splits the image's grid (>= 2**15 voxels) into one batch element per
    thread (fewer where the thread count does not divide the voxels) and gathers the label
    by index (as bytes when its values fit): the same numbers as one grid_sample each."""
    from deepseek.vision.transforms.spatial import resample

    k = len(shape) - 1
    image = torch.randn(shape, generator=seeded(0))
    label = torch.randint(0, classes, (2, *shape[1:]), generator=seeded(1)).to(label_dtype)
    grid = torch.rand(1, *shape[1:], k, generator=seeded(2)) * 2.4 - 1.2
    label_padding = "zeros" if padding_mode == "zeros" else "border"
    expected_image = F.grid_sample(
        image[None], grid, padding_mode=padding_mode, align_corners=True
    )[0]
    expected_label = F.grid_sample(
        label[None].float(), grid, mode="nearest", padding_mode=label_padding, align_corners=True
    )[0].long()
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            out, lab = resample(image, label, grid, padding_mode)
            assert torch.equal(out, expected_image)
            assert lab.dtype == label_dtype and torch.equal(lab.long(), expected_label)
    finally:
        torch.set_num_threads(threads)


def test_nearest_label_gather_sums_indices_in_int64_for_large_volumes(monkeypatch):
    """Volumes of >= 2**24 voxels sum flat indices in int64 (float32 would round them);
    the threshold is lowered here so that a small volume takes that path."""
    from deepseek.vision.transforms import spatial

    label = torch.randint(0, 9, (1, 30, 31, 32), generator=seeded(0))
    grid = torch.rand(1, 30, 31, 32, 3, generator=seeded(1)) * 2.2 - 1.1
    for zeros in (False, True):
        expected = F.grid_sample(
            label[None].float(),
            grid,
            mode="nearest",
            padding_mode="zeros" if zeros else "border",
            align_corners=True,
        )[0].long()
        monkeypatch.setattr(spatial, "_FLOAT32_EXACT_VOXELS", 0)
        assert torch.equal(spatial._nearest_cpu(label, grid, zeros), expected)
        monkeypatch.undo()
        assert torch.equal(spatial._nearest_cpu(label, grid, zeros), expected)


def test_random_transforms_are_reproducible_per_generator():
    image, label = torch.randn(1, 16, 16, 16), blobs((16, 16, 16))
    pipeline = Compose(
        [
            RandomElasticDeformation(alpha=(2, 4), sigma=(3, 4), prob=1.0),
            RandomAffine(rotate_range=0.3, scale_range=0.1, prob=1.0),
            RandomFlip(prob=0.5),
            RandomRotate90(prob=0.5),
            RandomGaussianNoise(prob=1.0, std=0.1),
        ]
    )
    a = pipeline(image, label, generator=seeded(3))
    b = pipeline(image, label, generator=seeded(3))
    c = pipeline(image, label, generator=seeded(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_prob_zero_is_identity_and_prob_one_always_applies():
    image = torch.randn(1, 8, 8, 8)
    assert torch.equal(RandomElasticDeformation(prob=0.0)(image), image)
    assert not torch.equal(RandomGaussianNoise(prob=1.0)(image), image)


def test_affine_translation_and_quarter_turn_match_direct_computation():
    image = torch.randn(1, 9, 9)
    shift = RandomAffine(translate_range=(2.0, 2.0), prob=1.0)
    out = shift(image, generator=seeded(0))
    # The output at x samples the input at x + (2, 2).
    torch.testing.assert_close(out[0, :-2, :-2], image[0, 2:, 2:], atol=1e-5, rtol=0)
    turn = RandomAffine(rotate_range=(math.pi / 2, math.pi / 2), prob=1.0)
    rotated, lab = turn(image, image.round().long(), generator=seeded(0))
    candidates = [torch.rot90(image, k, (1, 2)) for k in (1, 3)]
    assert any(torch.allclose(rotated, c, atol=1e-5) for c in candidates)
    assert any(torch.equal(lab, c.round().long()) for c in candidates)


def test_affine_3d_keeps_labels_discrete():
    label = blobs((16, 16, 16))
    t = RandomAffine(
        rotate_range=0.4, scale_range=0.2, shear_range=0.1, translate_range=2, prob=1.0
    )
    _, lab = t(label.float(), label, generator=seeded(2))
    assert set(lab.unique().tolist()) <= {0, 3, 7}


def test_flip_and_rot90_move_image_and_label_together():
    image = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4)
    label = image.long()
    for t in (RandomFlip(prob=1.0), RandomRotate90(prob=1.0, spatial_axes=(1, 2))):
        out, lab = t(image, label, generator=seeded(0))
        assert torch.equal(out.long(), lab)
    out = RandomFlip(prob=1.0, spatial_axis=0)(image)
    assert torch.equal(out, image.flip(1))


def test_crops_and_balanced_patches():
    label = torch.zeros(1, 32, 32, 32, dtype=torch.long)
    label[0, 25:28, 2:5, 10:13] = 2
    image = torch.randn(1, 32, 32, 32)
    pos = RandomCropByPosNegLabel((8, 8, 8), pos=1.0, neg=0.0)
    neg = RandomCropByPosNegLabel((8, 8, 8), pos=0.0, neg=1.0)
    for seed in range(10):
        img, lab = pos(image, label, generator=seeded(seed))
        assert img.shape == (1, 8, 8, 8) and lab.any()
        _, lab = neg(image, label, generator=seeded(seed))
        assert lab[0, 4, 4, 4] == 0
    img, lab = RandomCrop((8, 12, 16))(image, label, generator=seeded(0))
    assert img.shape == lab.shape == (1, 8, 12, 16)
    assert CenterCrop((2, 2, 2))(image).shape == (1, 2, 2, 2)
    torch.testing.assert_close(CenterCrop((2, 2, 2))(image), image[:, 15:17, 15:17, 15:17])


def test_intensity_transforms():
    hu = torch.tensor([[[-1200.0, -160.0, 40.0, 240.0, 3000.0]]])
    torch.testing.assert_close(CTWindow(40, 400)(hu), torch.tensor([[[0.0, 0.0, 0.5, 1.0, 1.0]]]))
    torch.testing.assert_close(ScaleIntensityRange(-1000, 1000, -1, 1, clip=False)(hu), hu / 1000)
    x = torch.randn(2, 6, 6, 6) * 5 + 3
    out = NormalizeIntensity()(x)
    torch.testing.assert_close(out.mean((1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std((1, 2, 3), correction=0), torch.ones(2), atol=1e-4, rtol=0)
    x[:, :2] = 0
    out = NormalizeIntensity(nonzero=True)(x)
    assert torch.equal(out[:, :2], x[:, :2])
    noisy = RandomGaussianNoise(prob=1.0, mean=0.0, std=2.0)(
        torch.zeros(1, 40, 40, 40), generator=seeded(0)
    )
    assert noisy.std().item() == pytest.approx(2.0, rel=0.02)


monai_transforms = pytest.importorskip("monai.transforms")


def test_intensity_transforms_equal_monai():
    x = torch.randn(1, 6, 7, 8) * 300
    torch.testing.assert_close(
        ScaleIntensityRange(-200, 300, 0, 1, clip=True)(x),
        monai_transforms.ScaleIntensityRange(-200, 300, 0, 1, clip=True)(x).as_subclass(
            torch.Tensor
        ),
    )
    x[:, :2] = 0
    for nonzero in (False, True):
        ours = NormalizeIntensity(nonzero=nonzero)(x)
        theirs = monai_transforms.NormalizeIntensity(nonzero=nonzero)(x).as_subclass(torch.Tensor)
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_compose_on_dicts_and_pairs():
    t = Compose([RandomFlip(prob=1.0, spatial_axis=0), CTWindow(0, 2)])
    image, label = torch.tensor([[[-1.0, 0.0, 1.0]]]), torch.tensor([[[0, 1, 2]]])
    out = t({"image": image, "label": label, "case": "a"}, generator=seeded(0))
    assert out["case"] == "a"
    torch.testing.assert_close(out["image"], CTWindow(0, 2)(image.flip(1)))
    assert torch.equal(out["label"], label.flip(1))
    img, lab = t(image, label, generator=seeded(0))
    assert torch.equal(lab, label.flip(1))
    assert t(image).shape == image.shape


class _Repeated(Dataset):
    def __init__(self, transform):
        self.transform = transform

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.transform(torch.zeros(1, 4, 4, 4))


def test_unseeded_transforms_differ_between_dataloader_workers():
    loader = DataLoader(_Repeated(RandomGaussianNoise(prob=1.0)), batch_size=1, num_workers=2)
    first, second = list(loader)[:2]  # items 0 and 1 come from different workers
    assert not torch.equal(first, second)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: RandomFlip()(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5)),
            r"same spatial shape.*\(1, 4, 4\).*\(1, 4, 5\)",
        ),
        (
            lambda: RandomCrop((8, 8))(torch.zeros(1, 4, 16)),
            r"patch size \(8, 8\) is larger than the volume \(4, 16\)",
        ),
        (lambda: RandomCropByPosNegLabel((2, 2))(torch.zeros(1, 4, 4)), "needs the label"),
        (lambda: Compose([])(torch.tensor([[[0.0, float("nan")]]])), "non-finite"),
        (lambda: RandomFlip()(torch.zeros(4, 4)), "channel-first"),
        (lambda: RandomElasticDeformation(prob=1.5), "prob must be in"),
        (lambda: RandomElasticDeformation(alpha=(5, 1)), "low <= high"),
        (lambda: CTWindow(0, -1), "width"),
    ],
)
def test_transforms_reject_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()
