"""deepseek-nlp + deepseek-quant: dynamic int8 inference of a BERT classifier."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("deepseek.quantization")

from deepseek.nlp import BertConfig, BertForSequenceClassification
from deepseek.plugins import registry


def classifier() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=200,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        num_labels=3,
    )
    return BertForSequenceClassification(config).eval()


def test_dynamic_int8_bert_matches_fp32_closely():
    model = classifier()
    qmodel = model.quantize_dynamic_int8()
    int8_linear = torch.ao.nn.quantized.dynamic.Linear
    quantized = [m for m in qmodel.modules() if isinstance(m, int8_linear)]
    assert len(quantized) == 2 * 6 + 2  # 6 Linear per layer, pooler and classifier
    assert not any(isinstance(m, torch.nn.Linear) for m in qmodel.modules())
    assert isinstance(model.classifier, torch.nn.Linear)  # the original is untouched
    ids = torch.randint(1, 200, (8, 24))
    mask = torch.ones_like(ids)
    mask[3:, 12:] = 0
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
        got = qmodel(ids, attention_mask=mask).logits
    assert got.shape == expected.shape == (8, 3)
    cosine = torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0)
    assert cosine > 0.99
    assert (got - expected).abs().max() < 0.1 * expected.abs().max() + 1e-3


def test_ptq_algorithm_from_the_registry_quantizes_a_registered_bert():
    model = registry("model").create("bert_classifier", preset="bert-tiny", num_labels=2).eval()
    qmodel = registry("algorithm").create("ptq").apply(model)
    out = qmodel(torch.randint(1, 1000, (2, 10)), labels=torch.tensor([0, 1]))
    assert out.logits.shape == (2, 2) and torch.isfinite(out.loss)
