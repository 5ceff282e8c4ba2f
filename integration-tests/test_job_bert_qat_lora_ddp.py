"""A real job: BERT fine-tuning with LoRA and quantization-aware training under ``ddp`` on
two gloo processes (``deepseek launch``), then a real int8 export.

The order is the one a user follows to ship an int8 LoRA fine-tune:

1. ``lora`` (deepseek-lora, from the algorithm registry) wraps the attention query/value
   layers and freezes everything but the adapters and the classifier head;
2. ``quantize_model`` (deepseek-quant, QAT) fake-quantizes that model, adapters
   included, so the adapters learn under int8 rounding of the frozen base weights and of
   the activations; the observers are frozen for the last steps
   (``FreezeQuantization``) so the ranks end with the same scales;
3. two processes train it with the Trainer and the ``ddp`` strategy;
4. export (rank 0): ``merge`` folds the adapters into plain ``nn.Linear`` weights
   (``W + alpha/rank * B @ A``: one int8 matmul per layer instead of three), the merged
   model's scales are calibrated on training batches (the merged weights are new tensors,
   so their per-channel scales are new too), ``convert`` makes the int8 model and ``save``
   writes it as a ``.pt2`` archive.

The test checks that the ranks agree bit for bit, that only the adapters and the head
trained, and that the int8 model (reloaded from its archive) predicts what the
fake-quantized models predict.

This file is also the job's script: ``deepseek launch`` runs it with ``__main__``.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # _launch, when this file runs as the job's script
import _launch  # noqa: E402

VOCAB, LENGTH, N_TRAIN, N_TEST = 512, 16, 64, 32
BATCH, EPOCHS = 8, 2  # per rank: 64 / (2 * 8) = 4 steps an epoch, 8 in all
STEPS = EPOCHS * N_TRAIN // (2 * BATCH)
FREEZE_OBSERVERS_AT = STEPS - 2  # the last two steps run with fixed scales


class BertLogits(nn.Module):
    """A BERT classifier as one tensor in, logits out: what ``torch.export`` (and so QAT
    and the int8 export) captures. Token id 0 is padding: the attention mask is derived
    from it inside the graph."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.bert = classifier

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids, attention_mask=(input_ids != 0).long()).logits


def texts(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids with padded tails and a learnable label (does token 7 occur?)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, LENGTH), generator=g)
    ids[torch.rand(n, LENGTH, generator=g) < 0.15] = 7
    lengths = torch.randint(LENGTH // 2, LENGTH + 1, (n,), generator=g)
    ids[torch.arange(LENGTH)[None, :] >= lengths[:, None]] = 0
    return ids, (ids == 7).any(1).long()


def lora_algorithm():
    """deepseek-lora's ``lora`` by name when the plugin is installed; its class (from
    plugins/lora/src on PYTHONPATH) when it is not."""
    options = {"rank": 4, "alpha": 8, "target_modules": ["*.query", "*.value"],
               "trainable": ["classifier"]}  # fmt: skip
    if _launch.installed("deepseek-lora"):
        from deepseek.plugins import registry

        return registry("algorithm").create("lora", **options)
    from deepseek_lora import Lora

    return Lora(**options)


def job(out: Path) -> None:
    """The training job: run by ``deepseek launch`` on two processes."""
    import torch.nn.functional as F
    from deepseek_lora import LoraLinear, merge
    from torch.utils.data import TensorDataset

    import deepseek as ds
    from deepseek.callbacks import Callback
    from deepseek.nlp import BertForSequenceClassification
    from deepseek.quantization import (
        FreezeQuantization,
        QuantConfig,
        calibrate,
        convert,
        quantize_model,
        save,
    )

    torch.set_num_threads(1)
    torch.manual_seed(0)
    bert = BertForSequenceClassification.from_pretrained(
        "bert-tiny", random_init=True, num_labels=2, vocab_size=VOCAB
    )
    model = BertLogits(lora_algorithm().apply(bert))
    assert sum(isinstance(m, LoraLinear) for m in model.modules()) == 4  # 2 layers x q, v
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids, labels = texts(N_TRAIN, seed=1)
    config = QuantConfig(per_channel=True, freeze_observers_step=FREEZE_OBSERVERS_AT)
    # Prepared now, before DDP wraps it, so the observers are buffers DDP knows.
    qat = quantize_model(model, config, example_inputs=ids[:2], inplace=True)

    losses: list[float] = []

    class RecordLoss(Callback):
        def on_train_batch_end(self, trainer, outputs, batch, batch_idx) -> None:
            losses.append(float(outputs["loss"]))

    trainer = ds.Trainer(
        qat, torch.optim.AdamW, {"lr": 1e-2}, train_data=TensorDataset(ids, labels),
        batch_size=BATCH, max_epochs=EPOCHS, strategy="ddp", loss_fn=F.cross_entropy,
        callbacks=[FreezeQuantization(), RecordLoss()], seed=0, enable_progress_bar=False,
        default_root_dir=None,
    )  # fmt: skip
    trainer.fit()
    rank = trainer.strategy.rank
    qat = trainer.unwrapped_model
    state = {k: v.detach().clone() for k, v in qat.state_dict().items()}
    trained = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.save({"state": state, "base": base, "trained": trained, "losses": losses,
                "steps": trainer.global_step, "world": trainer.strategy.world_size},
               out / f"rank{rank}.pt")  # fmt: skip
    if rank != 0:
        return

    # -- int8 export, on rank 0 ----------------------------------------------------------
    test_ids, _ = texts(N_TEST, seed=2)
    qat.eval()
    merged = merge(copy.deepcopy(qat.float_model)).eval()
    assert not any(isinstance(m, LoraLinear) for m in merged.modules())
    calibration = [ids[i : i + BATCH] for i in range(0, N_TRAIN, BATCH)]
    calibrated = calibrate(merged, calibration, QuantConfig(mode="static", per_channel=True))
    int8 = convert(calibrated, compiled=False)  # int8 weights, reference q/dq kernels
    with torch.no_grad():
        outputs = {
            "qat": qat(test_ids),  # the trained fake-quant model, adapters unmerged
            "lora_float": qat.float_model(test_ids),
            "merged_float": merged(test_ids),
            "merged_fake_quant": calibrated(test_ids),
            "int8": int8(test_ids),
        }
    save(int8, out / "bert_int8.pt2", test_ids[:2])
    torch.save({"test_ids": test_ids, **outputs}, out / "export.pt")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    pytest.importorskip("deepseek.distributed")
    pytest.importorskip("deepseek.nlp")
    pytest.importorskip("deepseek.quantization")
    if not _launch.installed("deepseek-lora"):
        sys.path.append(str(_launch.PLUGIN_SOURCES["deepseek-lora"]))
    pytest.importorskip("deepseek_lora")
    out = tmp_path_factory.mktemp("bert_qat_lora")

    def fresh() -> None:
        for f in out.iterdir():
            f.unlink()

    result = _launch.run(_launch.launch_cli(__file__, out), env=_launch.clean_env(),
                         cwd=out, timeout=300, before_attempt=fresh)  # fmt: skip
    assert result.returncode == 0, _launch.failure(result)
    return out


def test_ranks_agree_and_only_adapters_and_head_trained(trained: Path) -> None:
    r0, r1 = (torch.load(trained / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["steps"] == r1["steps"] == STEPS
    losses = torch.tensor([r0["losses"], r1["losses"]])  # (rank, step)
    assert torch.isfinite(losses).all()
    assert losses[:, -2:].mean() < losses[:, :2].mean(), losses  # it learns the task
    # Weights, adapters and every fake-quant scale and zero point: equal bit for bit.
    assert r0["state"].keys() == r1["state"].keys()
    observers = [k for k in r0["state"] if k.endswith(".scale")]
    assert observers, "no fake-quant scales in the QAT model's state"
    for key, value in r0["state"].items():
        assert torch.equal(value, r1["state"][key]), key
    changed = {n for n, p in r0["trained"].items() if not torch.equal(p, r0["base"][n])}
    adapters = {n for n in r0["base"] if n.endswith((".lora_A", ".lora_B"))}
    head = {"bert.classifier.weight", "bert.classifier.bias"}
    assert len(adapters) == 8
    assert changed == adapters | head


def test_int8_export_predicts_what_the_fake_quant_models_predict(trained: Path) -> None:
    from deepseek.quantization import load

    export = torch.load(trained / "export.pt", weights_only=True)
    # Merging the adapters changes nothing in float.
    torch.testing.assert_close(export["merged_float"], export["lora_float"], atol=1e-5, rtol=1e-5)
    int8 = load(trained / "bert_int8.pt2", compiled=False)
    with torch.no_grad():
        reloaded = int8(export["test_ids"])
    torch.testing.assert_close(reloaded, export["int8"])  # the archive is the model
    # The int8 graph computes what the fake-quant graph simulated (same scales).
    fake = export["merged_fake_quant"]
    assert torch.equal(reloaded.argmax(1), fake.argmax(1))
    assert (reloaded - fake).abs().max() <= 0.05 * fake.abs().max() + 1e-3
    # ... and what the trained QAT model (adapters unmerged, scales learnt in training)
    # predicted: the merged weights are re-quantized, so allow a rare flip near 0.
    qat = export["qat"]
    agree = (reloaded.argmax(1) == qat.argmax(1)).float().mean().item()
    assert agree >= 0.9, agree
    cosine = nn.functional.cosine_similarity(reloaded.flatten(), qat.flatten(), dim=0)
    assert cosine > 0.98, cosine


if __name__ == "__main__":
    job(Path(sys.argv[1]))
