"""Segmentation networks: shapes, a training step, checkpoint round trips, activation
checkpointing, the model registry and bad inputs. Everything tiny (16^3-32^3 volumes)."""

from __future__ import annotations

import pytest
import torch

from deepseek.checkpoint import load_weights, save_checkpoint
from deepseek.nn import apply_activation_checkpointing
from deepseek.nn.activation_checkpointing import CheckpointWrapper
from deepseek.plugins import registry
from deepseek.vision.networks import UNETR, UNet, UNetPlusPlus, ViT, resnet18

VIT = dict(hidden_size=32, mlp_dim=64, num_heads=4)


def build(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    if name == "unet3d":
        return UNet(3, 1, 2, features=(4, 8, 16)), torch.randn(2, 1, 16, 16, 16)
    if name == "unet2d":
        return UNet(2, 3, 4, features=(4, 8, 16, 32)), torch.randn(2, 3, 32, 32)
    if name == "unetpp3d":
        return UNetPlusPlus(3, 1, 3, features=(4, 8, 16)), torch.randn(2, 1, 16, 16, 16)
    if name == "unetpp2d_ds":
        return UNetPlusPlus(2, 1, 2, features=(4, 8, 16, 16), deep_supervision=True), torch.randn(
            2, 1, 32, 32
        )
    if name == "vit3d":
        net = ViT(1, 32, 16, num_layers=2, classification=True, num_classes=3, **VIT)
        return net, torch.randn(2, 1, 32, 32, 32)
    if name == "unetr":
        return UNETR(1, 2, 32, feature_size=4, num_layers=4, **VIT), torch.randn(1, 1, 32, 32, 32)
    if name == "resnet18":
        return resnet18(num_classes=3, in_channels=1), torch.randn(2, 1, 32, 32)
    raise AssertionError(name)


NETS = ["unet3d", "unet2d", "unetpp3d", "unetpp2d_ds", "vit3d", "unetr", "resnet18"]


def loss_of(out) -> torch.Tensor:
    heads = out if isinstance(out, list) else [out]
    return sum((h.float() ** 2).mean() for h in heads)


@pytest.mark.parametrize("name", NETS)
def test_network_trains_one_step(name):
    torch.manual_seed(0)
    net, x = build(name)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = [p.detach().clone() for p in net.parameters()]
    loss = loss_of(net(x))
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters()))


@pytest.mark.parametrize("name", NETS)
def test_network_round_trips_through_a_checkpoint(name, tmp_path):
    torch.manual_seed(0)
    net, x = build(name)
    net.eval()
    path = save_checkpoint(tmp_path / "ckpt", net.state_dict())
    torch.manual_seed(1)
    fresh, _ = build(name)
    fresh.eval()
    load_weights(fresh, path)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), net(x))


def rebuild(net: torch.nn.Module, norm: str) -> torch.nn.Module:
    """A U-Net / U-Net++ of ``net``'s configuration with the given norm."""
    extra = {"deep_supervision": net.deep_supervision} if hasattr(net, "deep_supervision") else {}
    return type(net)(
        net.spatial_dims, net.in_channels, net.out_channels, net.features, norm=norm, **extra
    )


@pytest.mark.parametrize("name", ["unet3d", "unet2d", "unetpp3d", "unetpp2d_ds"])
@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_channels_last_models_compute_the_same_and_share_checkpoints(name, norm, tmp_path):
    """The documented channels-last path (``model.to(memory_format=...)`` and the input
    likewise): same outputs and gradients as contiguous, and checkpoints saved in either
    format load into a model in the other."""
    torch.manual_seed(0)
    net, x = build(name)
    net = rebuild(net, norm)
    fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
    fast = rebuild(net, norm)
    fast.load_state_dict(net.state_dict())
    fast.to(memory_format=fmt)
    assert fast.encoder[0][0].weight.is_contiguous(memory_format=fmt)
    heads, fast_heads = net(x), fast(x.to(memory_format=fmt))
    heads = heads if isinstance(heads, list) else [heads]
    fast_heads = fast_heads if isinstance(fast_heads, list) else [fast_heads]
    for h, f in zip(heads, fast_heads, strict=True):
        torch.testing.assert_close(f, h, rtol=1e-4, atol=1e-5)
    loss_of(heads).backward()
    loss_of(fast_heads).backward()
    for (n, p), q in zip(net.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=n)
    # Checkpoints: channels-last -> contiguous and contiguous -> channels-last.
    net.eval(), fast.eval()
    saved_fast = save_checkpoint(tmp_path / "fast", fast.state_dict())
    saved_plain = save_checkpoint(tmp_path / "plain", net.state_dict())
    plain_copy = rebuild(net, norm).eval()
    fast_copy = rebuild(net, norm).to(memory_format=fmt).eval()
    load_weights(plain_copy, saved_fast)
    load_weights(fast_copy, saved_plain)
    assert fast_copy.encoder[0][0].weight.is_contiguous(memory_format=fmt)
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(plain_copy(x), expected)
        torch.testing.assert_close(
            fast_copy(x.to(memory_format=fmt)), expected, rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize("name", NETS)
def test_activation_checkpointing_detects_blocks_and_keeps_gradients(name):
    torch.manual_seed(0)
    net, x = build(name)
    ref, _ = build(name)
    ref.load_state_dict(net.state_dict())
    apply_activation_checkpointing(net)  # default policy: every block of every block stack
    wrapped = [m for m in net.modules() if isinstance(m, CheckpointWrapper)]
    assert len(wrapped) >= 2
    assert net.state_dict().keys() == ref.state_dict().keys()
    loss_of(net(x)).backward()
    loss_of(ref(x)).backward()
    for (name_, p), q in zip(net.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name_)


def test_unet_plus_plus_deep_supervision_returns_every_head_in_training_only():
    net, x = build("unetpp2d_ds")
    heads = net(x)
    assert isinstance(heads, list) and len(heads) == 3
    assert all(h.shape == (2, 2, 32, 32) for h in heads)
    net.eval()
    with torch.no_grad():
        final = net(x)
    assert final.shape == (2, 2, 32, 32)
    torch.testing.assert_close(final, heads[0].detach(), rtol=1e-4, atol=1e-4)


def test_unet_plus_plus_nested_pathways():
    net = UNetPlusPlus(3, 1, 2, features=(4, 8, 16, 32))
    # depth 3: columns j=1..3 hold 3 + 2 + 1 nested nodes; X[0][3] sees X[0][0..2] + upsampled.
    assert len(net.nested) == 6
    assert net.order[-1] == (0, 3)
    assert net.nested[-1].conv[0].in_channels == 3 * 4 + 4


def test_registry_builds_every_network_by_name():
    models = registry("model")
    for name in ("unet", "unetplusplus", "unetplusplus3d", "unetr", "vit3d"):
        assert models.provider(name).distribution == "deepseek-vision"
    net = models.create("unetplusplus3d", in_channels=1, out_channels=2, features=(4, 8))
    assert isinstance(net, UNetPlusPlus) and net.spatial_dims == 3
    assert isinstance(models.create("unet", spatial_dims=2, features=(4, 8)), UNet)
    assert isinstance(
        models.create("unetr", in_channels=1, out_channels=2, img_size=16, num_layers=4, **VIT),
        UNETR,
    )
    assert isinstance(
        models.create("vit3d", in_channels=1, img_size=16, patch_size=8, num_layers=1, **VIT), ViT
    )


@pytest.mark.parametrize(
    ("make", "x", "match"),
    [
        (
            lambda: UNet(3, 1, 2, features=(4, 8, 16)),
            torch.randn(1, 1, 16, 18, 16),
            "divisible by 4",
        ),
        (
            lambda: UNetPlusPlus(3, 1, 2, features=(4, 8, 16, 32)),
            torch.randn(1, 1, 16, 16, 12),
            "divisible by 8",
        ),
        (
            lambda: UNet(3, 1, 2, features=(4, 8)),
            torch.randn(1, 3, 16, 16, 16),
            "in_channels=1 but the input has 3",
        ),
        (lambda: UNet(2, 1, 2, features=(4, 8)), torch.randn(1, 1, 16, 16, 16), r"\(N, C, H, W\)"),
        (lambda: ViT(1, 32, 16, **VIT, num_layers=1), torch.randn(1, 1, 48, 32, 32), "img_size"),
        (
            lambda: UNETR(1, 2, 32, num_layers=4, **VIT),
            torch.randn(1, 2, 32, 32, 32),
            "in_channels=1",
        ),
    ],
)
def test_networks_reject_bad_inputs(make, x, match):
    with pytest.raises(ValueError, match=match):
        make()(x)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: UNet(spatial_dims=4), "spatial_dims must be 2 or 3"),
        (lambda: UNetPlusPlus(spatial_dims=1), "spatial_dims must be 2 or 3"),
        (lambda: ViT(1, 32, 16, spatial_dims=5), "spatial_dims must be 2 or 3"),
        (lambda: UNet(in_channels=0), "in_channels must be a positive int"),
        (lambda: UNet(features=(8,)), "at least 2"),
        (lambda: UNet(norm="layer"), "norm must be one of"),
        (lambda: ViT(1, 30, 16), "divisible by patch_size"),
        (lambda: ViT(1, 32, 16, hidden_size=30, num_heads=4), "divisible by num_heads"),
        (lambda: UNETR(1, 2, 32, num_layers=6), "divisible by 4"),
    ],
)
def test_networks_reject_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_unet_equals_monai_basic_unet_on_the_same_weights():
    monai_nets = pytest.importorskip("monai.networks.nets")
    from deepseek.vision.networks import convert_monai_basic_unet_state_dict

    torch.manual_seed(0)
    theirs = monai_nets.BasicUNet(3, 2, 3, features=(4, 4, 8, 16, 32, 4)).eval()
    ours = UNet(3, 2, 3, features=(4, 4, 8, 16, 32)).eval()
    ours.load_state_dict(convert_monai_basic_unet_state_dict(theirs.state_dict(), ours))
    x = torch.randn(1, 2, 32, 32, 32)
    with torch.no_grad():
        # MONAI's conv biases are kept here: instance norm cancels them.
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="does not fit"):
        convert_monai_basic_unet_state_dict(
            theirs.state_dict(), UNet(3, 2, 3, features=(4, 8, 8, 16, 16))
        )


def test_trainer_fits_deep_supervision_with_registered_metrics(tmp_path):
    import deepseek as ds
    from deepseek.utils.data import TensorDataset
    from deepseek.vision.losses import DeepSupervisionLoss, DiceFocalLoss

    torch.manual_seed(0)
    images = torch.randn(4, 1, 16, 16, 16)
    labels = (images > 0.5).long()
    data = TensorDataset(images, labels)
    net = UNetPlusPlus(3, 1, 2, features=(4, 8), deep_supervision=True)
    trainer = ds.Trainer(
        net,
        torch.optim.Adam,
        optimizer_kwargs={"lr": 1e-2},
        train_data=data,
        val_data=data,
        batch_size=2,
        loss_fn=DeepSupervisionLoss(DiceFocalLoss(to_onehot_y=True, softmax=True)),
        metrics=["dice", "iou"],
        max_epochs=1,
        gradient_checkpointing=True,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit()
    values = trainer.validate()
    assert 0.0 <= values["val_dice"] <= 1.0 and 0.0 <= values["val_iou"] <= 1.0
    assert trainer.global_step == 2
