"""deepseek-lora (plugins/lora) on deepseek-nlp's BERT, trained by core's Trainer.

The integration session installs the first-party packages but not the plugins under
plugins/, so this test puts plugins/lora/src on sys.path itself when deepseek-lora is
not installed (and skips cleanly if it still cannot import it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepseek.nlp")
try:
    import deepseek_lora
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "lora" / "src"))
deepseek_lora = pytest.importorskip("deepseek_lora")

import deepseek as ds  # noqa: E402
from deepseek.nlp import BertForSequenceClassification  # noqa: E402

Lora, LoraLinear, merge = deepseek_lora.Lora, deepseek_lora.LoraLinear, deepseek_lora.merge


def bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification.from_pretrained(
        "bert-tiny", random_init=True, num_labels=2
    )


def batches(n: int = 16, length: int = 12) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 1000, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[n // 2 :, length // 2 :] = 0
    labels = (ids[:, 0] % 2).long()
    return [
        {"input_ids": i, "attention_mask": m, "labels": y} for i, m, y in zip(ids, mask, labels)
    ]


def logits(model: torch.nn.Module, data: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    batch = torch.utils.data.default_collate(data)
    batch.pop("labels")
    with torch.no_grad():
        return model.eval()(**batch).logits


def lora_bert(tmp_path) -> tuple[torch.nn.Module, torch.Tensor, dict[str, torch.Tensor]]:
    """A LoRA BERT trained a few steps; returns it with the base logits and weights."""
    model, data = bert(), batches()
    base_logits = logits(model, data)
    algorithm = Lora(
        rank=8, alpha=16, target_modules=["*.query", "*.value"], trainable=["classifier"]
    )
    model = algorithm.apply(model)
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoraLinear)]
    assert len(wrapped) == 2 * model.config.num_hidden_layers
    assert all(n.endswith((".attention.self.query", ".attention.self.value")) for n in wrapped)
    assert torch.equal(logits(model, data), base_logits)  # B = 0: exactly the base model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = ds.Trainer(
        model,
        torch.optim.AdamW,
        optimizer_kwargs={"lr": 1e-2},
        train_data=data,
        batch_size=8,
        max_epochs=2,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
        seed=0,
    )
    trainer.fit()
    assert trainer.global_step == 4
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    expected = {n for n in before if ".lora_" in n} | {"classifier.weight", "classifier.bias"}
    assert changed == expected
    return model, base_logits, before


def test_lora_bert_trains_only_adapters_and_merges_for_export(tmp_path):
    model, base_logits, _ = lora_bert(tmp_path)
    data = batches()
    adapted = logits(model, data)
    assert not torch.allclose(adapted, base_logits)  # training did something
    merged = merge(model)
    assert not any(isinstance(m, LoraLinear) for m in merged.modules())
    torch.testing.assert_close(logits(merged, data), adapted, atol=1e-5, rtol=1e-5)
    # the export is a plain BERT checkpoint: it loads strictly into a fresh model
    fresh = bert(seed=1)
    fresh.load_state_dict(merged.state_dict())
    torch.testing.assert_close(logits(fresh, data), adapted, atol=1e-5, rtol=1e-5)


def test_merged_lora_bert_exports_to_int8(tmp_path):
    pytest.importorskip("deepseek.quantization")
    model, _, _ = lora_bert(tmp_path)
    data = batches()
    merged = merge(model)
    expected = logits(merged, data)
    qmodel = merged.quantize_dynamic_int8()
    got = logits(qmodel, data)
    cosine = torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0)
    assert cosine > 0.99
