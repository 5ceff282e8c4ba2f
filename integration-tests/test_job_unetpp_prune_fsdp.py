"""A real job: a 3-D U-Net++ (deepseek-vision), physically pruned (deepseek-quant's
``prune``), trained on balanced patches read from an HDF5 file of CT phantoms
(``write_phantom_h5`` -> core's ``H5Dataset`` -> vision's ``PatchDataset``) under the
``fsdp`` strategy (deepseek-dist) on two gloo processes, with a sharded checkpoint
(``torch.distributed.checkpoint``) at the end.

The test checks that the pruned network trained (finite losses that go down), that the
checkpoint consolidates into one safetensors file, and that a single-process model
rebuilt the same way (same seed, same pruning) loads it and gives the outputs the
sharded model gave.

This file is also the job's script: ``deepseek launch`` runs it with ``__main__``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # _launch, when this file runs as the job's script
import _launch  # noqa: E402

PATCH, VOLUME, N_VOLUMES = (16, 16, 16), (32, 32, 32), 2
FEATURES, AMOUNT = (8, 16, 32), 0.5
BATCH, EPOCHS = 2, 4  # per rank: 8 patches / (2 * 2) = 2 steps an epoch


def pruned_unetpp() -> torch.nn.Module:
    """The network both the job and the single-process check build: U-Net++ 3-D with
    half of every inner layer's channels removed (the L1 ranking is deterministic)."""
    from deepseek.pruning import prune
    from deepseek.vision.networks import UNetPlusPlus

    torch.manual_seed(0)
    net = UNetPlusPlus(spatial_dims=3, in_channels=1, out_channels=3, features=FEATURES)
    return prune(net, amount=AMOUNT, example_inputs=torch.randn(1, 1, *PATCH))


def probe() -> torch.Tensor:
    """A fixed input whose outputs the sharded and the reloaded model must agree on."""
    return torch.randn(2, 1, *PATCH, generator=torch.Generator().manual_seed(3)) * 300


def job(h5: Path, out: Path) -> None:
    """The training job: run by ``deepseek launch`` on two processes."""
    import deepseek as ds
    from deepseek.callbacks import Callback
    from deepseek.plugins import registry
    from deepseek.vision.data import PatchDataset
    from deepseek.vision.losses import DiceCELoss

    torch.set_num_threads(1)
    model = pruned_unetpp()
    report = model.pruning_report
    data = PatchDataset(h5, PATCH, samples_per_volume=4, pos=1, neg=1, num_classes=3, seed=0)

    losses: list[float] = []

    class RecordLoss(Callback):
        def on_train_batch_end(self, trainer, outputs, batch, batch_idx) -> None:
            losses.append(float(outputs["loss"]))

    # Raw Hounsfield units in: the first convolution's instance norm rescales them.
    trainer = ds.Trainer(
        model, torch.optim.AdamW, {"lr": 3e-3}, train_data=data, batch_size=BATCH,
        max_epochs=EPOCHS, strategy=registry("strategy").create("fsdp", checkpoint="sharded"),
        loss_fn=DiceCELoss(to_onehot_y=True, softmax=True), callbacks=[RecordLoss()],
        seed=0, enable_progress_bar=False, default_root_dir=None,
    )  # fmt: skip
    trainer.fit()
    path = trainer.save_checkpoint(out / "checkpoint")  # collective: every rank its shards
    model.eval()
    with torch.no_grad():  # FSDP's forward is collective too: every rank runs it
        outputs = model(probe())
    rank = trainer.strategy.rank
    torch.save({"losses": losses, "steps": trainer.global_step, "outputs": outputs,
                "params_before": report.params_before, "params_after": report.params_after,
                "checkpoint": str(path)}, out / f"rank{rank}.pt")  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    pytest.importorskip("deepseek.distributed")
    pytest.importorskip("deepseek.vision")
    pytest.importorskip("deepseek.pruning")
    from deepseek.vision.data import write_phantom_h5

    root = tmp_path_factory.mktemp("unetpp_prune_fsdp")
    h5 = write_phantom_h5(root / "phantoms.h5", n=N_VOLUMES, shape=VOLUME, seed=0)
    out = root / "run"

    def fresh() -> None:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()

    result = _launch.run(_launch.launch_cli(__file__, h5, out), env=_launch.clean_env(),
                         cwd=root, timeout=300, before_attempt=fresh)  # fmt: skip
    assert result.returncode == 0, _launch.failure(result)
    return out


def test_pruned_unetpp_trains_on_h5_patches_under_fsdp(trained: Path) -> None:
    r0, r1 = (torch.load(trained / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["steps"] == r1["steps"] == EPOCHS * N_VOLUMES * 4 // (2 * BATCH)
    assert r0["params_after"] < 0.5 * r0["params_before"]  # really smaller
    for r in (r0, r1):
        losses = torch.tensor(r["losses"])
        assert torch.isfinite(losses).all(), r["losses"]
    # Each rank logs its own batches' losses; their average over the first and the last
    # epoch shows the trend.
    per_epoch = torch.tensor([r0["losses"], r1["losses"]]).mean(0).view(EPOCHS, -1).mean(1)
    assert per_epoch[-1] < per_epoch[0], per_epoch.tolist()
    torch.testing.assert_close(r0["outputs"], r1["outputs"])  # one model, sharded


def test_sharded_checkpoint_reloads_into_a_single_process_model(trained: Path) -> None:
    from deepseek.checkpoint import load_weights
    from deepseek.distributed.checkpoint import consolidate

    r0 = torch.load(trained / "rank0.pt", weights_only=True)
    weights = consolidate(r0["checkpoint"])
    model = pruned_unetpp()
    untrained = model.eval()(probe())
    load_weights(model, weights)  # strict: every key and shape of the pruned network
    with torch.no_grad():
        got = model.eval()(probe())
    assert not torch.allclose(got, untrained)  # the trained weights, not the initial ones
    torch.testing.assert_close(got, r0["outputs"], atol=1e-5, rtol=1e-4)


if __name__ == "__main__":
    job(Path(sys.argv[1]), Path(sys.argv[2]))
