"""Numerical parity with Hugging Face transformers, on random small configs.

Same weights (loaded through each side's own from_pretrained), same inputs with padding
and token types: hidden states, logits and losses within 1e-5 in fp32 eval; gradients
after a training step within 1e-4. Both directions: we load what transformers saves and
transformers loads what we save.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from deepseek.nlp import (  # noqa: E402
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)

ATOL = 1e-5
GRAD_ATOL = 1e-4

PAIRS = {
    "BertModel": BertModel,
    "BertForSequenceClassification": BertForSequenceClassification,
    "BertForTokenClassification": BertForTokenClassification,
    "BertForMaskedLM": BertForMaskedLM,
    "BertForPreTraining": BertForPreTraining,
}


def hf_config(seed: int, **overrides):
    """A random small BERT config (sizes drawn from the seed)."""
    g = torch.Generator().manual_seed(seed)

    def pick(*values):
        return values[int(torch.randint(len(values), (), generator=g))]

    heads = pick(2, 4)
    values = {
        "vocab_size": pick(97, 130),
        "hidden_size": heads * pick(8, 12),
        "num_hidden_layers": pick(1, 2, 3),
        "num_attention_heads": heads,
        "intermediate_size": pick(37, 64),
        "max_position_embeddings": 40,
        "type_vocab_size": pick(2, 3),
        "hidden_act": pick("gelu", "gelu_new", "relu"),
        "num_labels": pick(2, 3, 5),
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        **overrides,
    }
    return transformers.BertConfig(**values)


def inputs(config, batch=3, length=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, config.vocab_size, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    types = torch.randint(0, config.type_vocab_size, (batch, length), generator=g)
    return ids, mask, types


def hf_pair(name, config, tmp_path, seed=0):
    torch.manual_seed(seed)
    theirs = getattr(transformers, name)(config).eval()
    theirs.save_pretrained(tmp_path / "hf")
    ours = PAIRS[name].from_pretrained(tmp_path / "hf").eval()
    return theirs, ours


def labels_for(name, config, ids, mask, seed=1):
    g = torch.Generator().manual_seed(seed)
    if name == "BertForSequenceClassification":
        return {"labels": torch.randint(0, config.num_labels, (ids.shape[0],), generator=g)}
    if name == "BertForTokenClassification":
        labels = torch.randint(0, config.num_labels, ids.shape, generator=g)
        return {"labels": labels.masked_fill(mask == 0, -100)}
    if name == "BertForMaskedLM":
        labels = ids.masked_fill(torch.rand(ids.shape, generator=g) > 0.4, -100)
        return {"labels": labels.masked_fill(mask == 0, -100)}
    if name == "BertForPreTraining":
        labels = ids.masked_fill(torch.rand(ids.shape, generator=g) > 0.4, -100)
        return {
            "labels": labels.masked_fill(mask == 0, -100),
            "next_sentence_label": torch.randint(0, 2, (ids.shape[0],), generator=g),
        }
    return {}


def main_outputs(name, out):
    if name == "BertModel":
        return {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output}
    if name == "BertForPreTraining":
        return {
            "prediction_logits": out.prediction_logits,
            "seq_relationship_logits": out.seq_relationship_logits,
            "loss": out.loss,
        }
    return {"logits": out.logits, "loss": out.loss}


def assert_close_on_real_tokens(got, expected, mask, atol=ATOL):
    """Per-token outputs (``(batch, length, ...)``) compared on the real tokens only: at
    padding positions both sides hold unspecified values (ours: zeros when unpadded)."""
    if got.dim() >= 2 and got.shape[:2] == mask.shape:
        keep = mask.bool()
        got, expected = got[keep], expected[keep]
    torch.testing.assert_close(got, expected, atol=atol, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", list(PAIRS))
def test_eval_outputs_match_transformers(name, seed, tmp_path):
    config = hf_config(seed)
    theirs, ours = hf_pair(name, config, tmp_path, seed)
    ids, mask, types = inputs(config, seed=seed)
    extra = labels_for(name, config, ids, mask)
    kwargs = {"attention_mask": mask, "token_type_ids": types, **extra}
    with torch.no_grad():
        expected = theirs(input_ids=ids, output_hidden_states=True, **kwargs)
        got = ours(ids, output_hidden_states=True, **kwargs)
    for key, value in main_outputs(name, expected).items():
        if value is None:
            continue
        assert_close_on_real_tokens(main_outputs(name, got)[key], value, mask)
    # The padded path (accelerators, torch.compile) computes padding rows as transformers
    # does: there every row matches.
    (ours.bert if hasattr(ours, "bert") else ours).unpad = False
    with torch.no_grad():
        padded = ours(ids, output_hidden_states=True, **kwargs)
    for key, value in main_outputs(name, expected).items():
        if value is not None:
            torch.testing.assert_close(main_outputs(name, padded)[key], value, atol=ATOL, rtol=0)
    assert len(got.hidden_states) == len(expected.hidden_states) == config.num_hidden_layers + 1
    for mine, ref in zip(got.hidden_states, expected.hidden_states, strict=True):
        # Padded query rows are garbage on both sides; compare the real tokens.
        keep = mask.bool()
        torch.testing.assert_close(mine[keep], ref[keep], atol=ATOL, rtol=0)


def test_attention_probabilities_match_eager_transformers(tmp_path):
    config = hf_config(3)
    config._attn_implementation = "eager"
    theirs, ours = hf_pair("BertModel", config, tmp_path)
    theirs.config._attn_implementation = "eager"
    ids, mask, types = inputs(config)
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask, output_attentions=True)
        got = ours(ids, attention_mask=mask, output_attentions=True)
    assert len(got.attentions) == config.num_hidden_layers
    for mine, ref in zip(got.attentions, expected.attentions, strict=True):
        keep = mask.bool()[:, None, :, None].expand_as(ref)
        torch.testing.assert_close(mine[keep], ref[keep], atol=ATOL, rtol=0)
    assert_close_on_real_tokens(got.last_hidden_state, expected.last_hidden_state, mask)


@pytest.mark.parametrize(
    ("problem_type", "num_labels"),
    [("regression", 1), ("multi_label_classification", 4), ("single_label_classification", 3)],
)
def test_problem_types_match_transformers(problem_type, num_labels, tmp_path):
    config = hf_config(4, num_labels=num_labels)
    theirs, ours = hf_pair("BertForSequenceClassification", config, tmp_path)
    ids, mask, types = inputs(config)
    if problem_type == "regression":
        labels = torch.randn(3)
    elif problem_type == "multi_label_classification":
        labels = torch.randint(0, 2, (3, num_labels)).float()
    else:
        labels = torch.randint(0, num_labels, (3,))
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask, labels=labels)
        got = ours(ids, mask, labels=labels)
    torch.testing.assert_close(got.loss, expected.loss, atol=ATOL, rtol=0)
    assert theirs.config.problem_type == problem_type  # transformers inferred the same rule


@pytest.mark.parametrize(
    "name", ["BertForSequenceClassification", "BertForTokenClassification", "BertForMaskedLM"]
)
def test_gradients_and_one_step_match_transformers(name, tmp_path):
    config = hf_config(5)
    theirs, ours = hf_pair(name, config, tmp_path)
    theirs.train()
    ours.train()  # dropout is 0 in these configs, so train mode is deterministic
    ids, mask, types = inputs(config)
    extra = labels_for(name, config, ids, mask)
    opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=1e-3)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-3)
    for model in (theirs, ours):
        kwargs = {"attention_mask": mask, "token_type_ids": types, **extra}
        out = model(input_ids=ids, **kwargs)
        out.loss.backward()
    their_grads = {n: p.grad for n, p in theirs.named_parameters()}
    checked = 0
    for n, p in ours.named_parameters():
        assert p.grad is not None, n
        torch.testing.assert_close(p.grad, their_grads[n], atol=GRAD_ATOL, rtol=0, msg=n)
        checked += 1
    assert checked == len(their_grads)
    opt_theirs.step()
    opt_ours.step()
    theirs.eval()
    ours.eval()
    with torch.no_grad():
        after_theirs = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types, **extra)
        after_ours = ours(ids, attention_mask=mask, token_type_ids=types, **extra)
    assert_close_on_real_tokens(after_ours.logits, after_theirs.logits, mask, atol=GRAD_ATOL)
    torch.testing.assert_close(after_ours.loss, after_theirs.loss, atol=GRAD_ATOL, rtol=0)


@pytest.mark.parametrize("name", list(PAIRS))
def test_transformers_loads_what_we_save(name, tmp_path):
    config = hf_config(6)
    torch.manual_seed(0)
    ours = PAIRS[name](BertConfig(**_ours(config))).eval()
    ours.save_pretrained(tmp_path / "ours")
    theirs, info = getattr(transformers, name).from_pretrained(
        tmp_path / "ours", output_loading_info=True
    )
    theirs.eval()
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert not info["unexpected_keys"]
    ids, mask, types = inputs(config)
    with torch.no_grad():
        expected = main_outputs(name, ours(ids, attention_mask=mask, token_type_ids=types))
        got = main_outputs(name, theirs(input_ids=ids, attention_mask=mask, token_type_ids=types))
    for key, value in expected.items():
        if value is not None:
            assert_close_on_real_tokens(got[key], value, mask)


def test_legacy_bin_checkpoint_with_gamma_beta_and_no_prefix(tmp_path):
    """An old-style ``pytorch_model.bin``: bare encoder keys, LayerNorm gamma/beta, a
    position_ids buffer; loaded with weights_only=True into a task model."""
    config = hf_config(7)
    torch.manual_seed(0)
    theirs = transformers.BertModel(config).eval()
    legacy = {}
    for key, value in theirs.state_dict().items():
        key = key.replace("LayerNorm.weight", "LayerNorm.gamma")
        key = key.replace("LayerNorm.bias", "LayerNorm.beta")
        legacy[key] = value.clone()
    legacy["embeddings.position_ids"] = torch.arange(config.max_position_embeddings)[None]
    directory = tmp_path / "legacy"
    directory.mkdir()
    torch.save(legacy, directory / "pytorch_model.bin")
    config.to_json_file(directory / "config.json")
    ours, info = BertForSequenceClassification.from_pretrained(directory, output_loading_info=True)
    assert info["unexpected_keys"] == []
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    ids, mask, types = inputs(config)
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types)
        got = ours.bert(ids, attention_mask=mask, token_type_ids=types)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, atol=ATOL, rtol=0)


def _ours(config) -> dict:
    keys = (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
        "type_vocab_size",
        "hidden_act",
        "num_labels",
    )
    return {k: getattr(config, k) for k in keys}
