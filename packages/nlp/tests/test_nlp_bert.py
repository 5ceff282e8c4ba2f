"""deepseek-nlp: BERT config, Hugging Face key compatibility, masking, plugin discovery."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from deepseek.nlp.models.bert import BertConfig, BertModel, bert_tiny
from deepseek.plugins import registry

# Hugging Face BertModel's parameter names for the embeddings, layer 0 and the pooler
# (transformers' modeling_bert.py): the compatibility contract for loading HF weights.
HF_EMBEDDING_KEYS = [
    "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight",
    "embeddings.LayerNorm.weight",
    "embeddings.LayerNorm.bias",
]
HF_LAYER0_KEYS = [
    "encoder.layer.0.attention.self.query.weight",
    "encoder.layer.0.attention.self.query.bias",
    "encoder.layer.0.attention.self.key.weight",
    "encoder.layer.0.attention.self.key.bias",
    "encoder.layer.0.attention.self.value.weight",
    "encoder.layer.0.attention.self.value.bias",
    "encoder.layer.0.attention.output.dense.weight",
    "encoder.layer.0.attention.output.dense.bias",
    "encoder.layer.0.attention.output.LayerNorm.weight",
    "encoder.layer.0.attention.output.LayerNorm.bias",
    "encoder.layer.0.intermediate.dense.weight",
    "encoder.layer.0.intermediate.dense.bias",
    "encoder.layer.0.output.dense.weight",
    "encoder.layer.0.output.dense.bias",
    "encoder.layer.0.output.LayerNorm.weight",
    "encoder.layer.0.output.LayerNorm.bias",
]
HF_POOLER_KEYS = ["pooler.dense.weight", "pooler.dense.bias"]

# bert-base-chinese's config.json as published on the Hugging Face hub.
HF_BERT_BASE_CHINESE = {
    "architectures": ["BertForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "directionality": "bidi",
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "pooler_fc_size": 768,
    "pooler_num_attention_heads": 12,
    "pooler_num_fc_layers": 3,
    "pooler_size_per_head": 128,
    "pooler_type": "first_token_transform",
    "type_vocab_size": 2,
    "vocab_size": 21128,
}


def tiny(**overrides) -> BertModel:
    torch.manual_seed(0)
    return bert_tiny(**overrides).eval()


def test_state_dict_keys_are_hugging_face_names():
    keys = list(tiny().state_dict())
    assert keys[: len(HF_EMBEDDING_KEYS)] == HF_EMBEDDING_KEYS
    layer0 = [k for k in keys if k.startswith("encoder.layer.0.")]
    assert layer0 == HF_LAYER0_KEYS
    assert keys[-2:] == HF_POOLER_KEYS
    # Every layer has the same names as layer 0, and nothing else is in the state dict.
    expected = HF_EMBEDDING_KEYS + [
        k.replace("layer.0.", f"layer.{i}.") for i in range(2) for k in HF_LAYER0_KEYS
    ]
    assert keys == expected + HF_POOLER_KEYS


def test_bert_base_chinese_parameter_count():
    config = BertConfig.from_preset("bert-base-chinese")
    h, i, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    linear = lambda fan_in, fan_out: fan_in * fan_out + fan_out  # noqa: E731
    embeddings = (
        config.vocab_size + config.max_position_embeddings + config.type_vocab_size
    ) * h + 2 * h
    layer = 4 * linear(h, h) + linear(h, i) + linear(i, h) + 2 * (2 * h)
    expected = embeddings + n * layer + linear(h, h)
    with torch.device("meta"):  # counting needs shapes only, not memory
        model = BertModel(config)
    assert sum(p.numel() for p in model.parameters()) == expected == 102_267_648


def test_config_from_hugging_face_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(HF_BERT_BASE_CHINESE))
    config = BertConfig.from_json_file(path)
    assert config == BertConfig.from_preset("bert-base-chinese")
    assert config.vocab_size == 21128 and config.layer_norm_eps == 1e-12
    assert config.architectures == ["BertForMaskedLM"]  # kept, not compared


def test_config_presets():
    config = BertConfig.from_preset("bert-tiny")
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (
        2,
        128,
        2,
    )
    assert BertConfig.from_preset("bert-tiny", hidden_size=64).hidden_size == 64


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        ({"hidden_size": "768"}, TypeError, r"hidden_size must be a int, got str"),
        ({"num_hidden_layers": 2.0}, TypeError, "num_hidden_layers"),
        ({"num_attention_heads": True}, TypeError, "num_attention_heads"),
        ({"hidden_dropout_prob": "0.1"}, TypeError, "hidden_dropout_prob"),
        ({"hidden_act": 3}, TypeError, "hidden_act"),
        ({"hidden_size": 100, "num_attention_heads": 3}, ValueError, "divisible"),
        ({"hidden_act": "mish"}, ValueError, "not supported"),
        ({"position_embedding_type": "relative_key"}, ValueError, "absolute"),
        ({"vocab_size": 0}, ValueError, "vocab_size must be >= 1"),
    ],
)
def test_config_rejects_bad_values(data, error, match):
    with pytest.raises(error, match=match):
        BertConfig.from_dict(data)


def test_config_errors_on_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        BertConfig.from_json_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        BertConfig.from_json_file(bad)
    with pytest.raises(ValueError, match="unknown BERT preset"):
        BertConfig.from_preset("bert-huge")
    with pytest.raises(TypeError, match="hiden_size"):
        BertConfig.from_preset("bert-tiny", hiden_size=64)


def reference_bert(model: BertModel, ids, mask, token_types):
    """BERT written out with explicit softmax attention, reading the same weights."""
    c, w = model.config, model.state_dict()
    batch, length = ids.shape
    heads, dim = c.num_attention_heads, c.hidden_size // c.num_attention_heads

    def ln(x, prefix):
        return F.layer_norm(x, (c.hidden_size,), w[prefix + ".weight"], w[prefix + ".bias"], 1e-12)

    def dense(x, prefix):
        return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]

    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:length]
        + w["embeddings.token_type_embeddings.weight"][token_types]
    )
    x = ln(x, "embeddings.LayerNorm")
    for i in range(c.num_hidden_layers):
        p = f"encoder.layer.{i}."
        q, k, v = (
            dense(x, p + f"attention.self.{n}").view(batch, length, heads, dim).transpose(1, 2)
            for n in ("query", "key", "value")
        )
        scores = q @ k.transpose(-1, -2) / math.sqrt(dim)
        scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, -1)
        x = ln(dense(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        hidden = F.gelu(dense(x, p + "intermediate.dense"))
        x = ln(dense(hidden, p + "output.dense") + x, p + "output.LayerNorm")
    return x, torch.tanh(dense(x[:, 0], "pooler.dense"))


def test_forward_matches_explicit_reference():
    model = tiny()
    torch.manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (3, 10))
    token_types = torch.randint(0, 2, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    with torch.no_grad():
        hidden, pooled = model(ids, attention_mask=mask, token_type_ids=token_types)
        ref_hidden, ref_pooled = reference_bert(model, ids, mask, token_types)
        model.unpad = False  # padding computed like every token (the accelerator path)
        padded_hidden, padded_pooled = model(ids, attention_mask=mask, token_type_ids=token_types)
    real = mask.bool()  # padding rows are unspecified (zeros when unpadded)
    torch.testing.assert_close(hidden[real], ref_hidden[real], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pooled, ref_pooled, atol=1e-5, rtol=1e-4)
    assert (hidden[~real] == 0).all()
    torch.testing.assert_close(padded_hidden, ref_hidden, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(padded_pooled, ref_pooled, atol=1e-5, rtol=1e-4)


def test_attention_mask_hides_padding_tokens():
    model = tiny()
    torch.manual_seed(2)
    ids = torch.randint(1, model.config.vocab_size, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[:, 7:] = 0
    changed = ids.clone()
    changed[:, 7:] = torch.randint(1, model.config.vocab_size, (2, 5))
    with torch.no_grad():
        hidden_a, pooled_a = model(ids, attention_mask=mask)
        hidden_b, pooled_b = model(changed, attention_mask=mask)
        hidden_unmasked, _ = model(changed)
    torch.testing.assert_close(hidden_a[:, :7], hidden_b[:, :7])
    torch.testing.assert_close(pooled_a, pooled_b)
    # Without the mask the same change does reach the other tokens.
    assert not torch.allclose(hidden_a[:, :7], hidden_unmasked[:, :7], atol=1e-4)


def test_eval_is_deterministic_and_train_uses_dropout():
    model = tiny()
    ids = torch.randint(0, model.config.vocab_size, (2, 9))
    with torch.no_grad():
        first, second = model(ids), model(ids)
    torch.testing.assert_close(first[0], second[0], rtol=0, atol=0)
    torch.testing.assert_close(first[1], second[1], rtol=0, atol=0)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(ids)[0], model(ids)[0])


def test_gradients_reach_every_parameter():
    model = tiny().train()
    hidden, pooled = model(torch.randint(0, 100, (2, 6)), token_type_ids=torch.ones(2, 6).long())
    (hidden.sum() + pooled.sum()).backward()
    missing = [
        name
        for name, p in model.named_parameters()
        if p.grad is None or (name != "embeddings.word_embeddings.weight" and not p.grad.any())
    ]
    assert missing == []


def test_padding_embedding_starts_at_zero():
    model = tiny()
    assert not model.embeddings.word_embeddings.weight[0].any()
    assert model.embeddings.word_embeddings.weight[1].any()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"input_ids": torch.zeros(2, 4)}, TypeError, "integer tensor"),
        ({"input_ids": torch.zeros(8, dtype=torch.long)}, ValueError, r"\(batch, length\)"),
        ({"input_ids": torch.full((1, 4), 30522)}, ValueError, "outside"),
        ({"input_ids": torch.zeros(1, 513, dtype=torch.long)}, ValueError, "max_position"),
        (
            {"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 5)},
            ValueError,
            "attention_mask must be a tensor of shape",
        ),
        (
            {"input_ids": torch.zeros(1, 4, dtype=torch.long), "token_type_ids": torch.ones(1, 4)},
            TypeError,
            "token_type_ids",
        ),
        (
            {
                "input_ids": torch.zeros(1, 4, dtype=torch.long),
                "token_type_ids": torch.full((1, 4), 2),
            },
            ValueError,
            "token_type_ids holds values",
        ),
    ],
)
def test_forward_rejects_bad_inputs(kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny()(**kwargs)


def test_model_requires_config_object():
    with pytest.raises(TypeError, match="BertConfig"):
        BertModel({"hidden_size": 128})


def test_plugin_is_discovered_through_its_entry_point():
    models = registry("model")
    names = ("bert", "bert-base-chinese", "bert-base-uncased", "bert-tiny")
    assert set(names) <= set(models.names())
    for name in names:
        assert models.provider(name).distribution == "deepseek-nlp"
    model = models.create("bert-tiny", num_hidden_layers=1, hidden_dropout_prob=0.0)
    assert isinstance(model, BertModel)
    assert model.config.num_hidden_layers == 1 and len(model.encoder.layer) == 1
    assert model.config.hidden_size == 128
    with torch.device("meta"):
        custom = models.create("bert", num_hidden_layers=3, vocab_size=1000)
    assert custom.config.hidden_size == 768 and len(custom.encoder.layer) == 3
