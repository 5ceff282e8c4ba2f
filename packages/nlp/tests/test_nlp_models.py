# ruff: noqa: E501 (the issue snippet is quoted exactly as written)
"""Task models, from_pretrained / save_pretrained, bad inputs, compile and host syncs."""

from __future__ import annotations

import json
import logging
import pickle

import pytest
import torch

from deepseek.nlp import (
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertTokenizer,
)

TINY = {
    "vocab_size": 60,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 24,
    "max_position_embeddings": 32,
}
VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    *"我爱北京天安门的是中国人",
    "hello",
    "world",
]

ISSUE_SNIPPET = """
from deepseek.nlp import BertForSequenceClassification
model = BertForSequenceClassification.from_pretrained('bert-base-chinese',num_labels=3,gradient_checkpointing=True)
"""


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Empty model home and HF cache: nothing is found unless a test puts it there."""
    home, hf = tmp_path / "model_home", tmp_path / "hf_home"
    home.mkdir()
    monkeypatch.setenv("DEEPSEEK_MODEL_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(hf))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return home, hf


def write_checkpoint(directory, model_cls=BertForPreTraining, **overrides):
    torch.manual_seed(0)
    model = model_cls(BertConfig(**{**TINY, **overrides}))
    model.save_pretrained(directory)
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return model


def test_issue_snippet_runs_with_local_weights(offline):
    home, _ = offline
    pretrained = write_checkpoint(home / "bert-base-chinese")
    scope: dict = {}
    exec(ISSUE_SNIPPET, scope)
    model = scope["model"]
    assert isinstance(model, BertForSequenceClassification)
    assert model.config.num_labels == 3 and model.classifier.out_features == 3
    assert model.config.gradient_checkpointing and model.bert.encoder.gradient_checkpointing
    # The encoder weights are the pretrained ones (pooler included).
    torch.testing.assert_close(
        model.bert.encoder.layer[1].output.dense.weight,
        pretrained.bert.encoder.layer[1].output.dense.weight,
    )
    torch.testing.assert_close(model.bert.pooler.dense.bias, pretrained.bert.pooler.dense.bias)


def test_issue_snippet_with_random_init_builds_bert_base_chinese(offline):
    model = BertForSequenceClassification.from_pretrained(
        "bert-base-chinese", num_labels=3, gradient_checkpointing=True, random_init=True
    )
    config = model.config
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (21128, 768, 12)
    assert model.classifier.out_features == 3 and config.gradient_checkpointing


def test_missing_model_names_every_place_and_how_to_fix(offline):
    home, hf = offline
    with pytest.raises(FileNotFoundError) as err:
        BertForSequenceClassification.from_pretrained("bert-base-chinese", num_labels=3)
    message = str(err.value)
    assert "'bert-base-chinese'" in message
    assert str(home / "bert-base-chinese") in message
    assert str(hf / "hub") in message
    assert "random_init=True" in message and "DEEPSEEK_MODEL_HOME" in message
    with pytest.raises(FileNotFoundError, match="bert-base-chinese"):
        BertTokenizer.from_pretrained("bert-base-chinese")


def test_loads_from_the_hugging_face_cache_layout(offline):
    _, hf = offline
    repo = hf / "hub" / "models--google-bert--bert-base-chinese"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    pretrained = write_checkpoint(snapshot, BertForMaskedLM)
    model = BertForMaskedLM.from_pretrained("google-bert/bert-base-chinese")
    torch.testing.assert_close(
        model.bert.embeddings.word_embeddings.weight,
        pretrained.bert.embeddings.word_embeddings.weight,
    )
    # The bare name finds the same snapshot (the checkpoint moved to google-bert/).
    assert isinstance(BertModel.from_pretrained("bert-base-chinese"), BertModel)
    tokenizer = BertTokenizer.from_pretrained("bert-base-chinese")
    assert tokenizer.tokenize("我爱hello") == ["我", "爱", "hello"]


def test_loading_report_says_what_is_new_and_what_is_unused(tmp_path, caplog):
    write_checkpoint(tmp_path / "ckpt", BertForPreTraining)
    with caplog.at_level(logging.WARNING, logger="deepseek.nlp"):
        model, info = BertForTokenClassification.from_pretrained(
            tmp_path / "ckpt", num_labels=4, output_loading_info=True
        )
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    assert all(k.startswith(("bert.pooler.", "cls.")) for k in info["unexpected_keys"])
    (record,) = caplog.records  # one short report
    assert "newly initialised" in record.message and "classifier" in record.message
    assert "unused" in record.message and "cls.predictions" in record.message
    assert model.training is False


def test_masked_lm_decoder_is_tied_and_saved_once(tmp_path):
    model = BertForMaskedLM(BertConfig(**TINY))
    embeddings = model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.weight is embeddings
    assert model.cls.predictions.decoder.bias is model.cls.predictions.bias
    model.save_pretrained(tmp_path / "mlm")
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "mlm" / "model.safetensors")
    assert "cls.predictions.decoder.weight" not in saved and "cls.predictions.bias" in saved
    loaded = BertForMaskedLM.from_pretrained(tmp_path / "mlm")
    assert loaded.cls.predictions.decoder.weight is loaded.bert.embeddings.word_embeddings.weight
    torch.testing.assert_close(loaded.cls.predictions.decoder.weight, embeddings)
    # One gradient reaches the shared matrix from both uses.
    ids = torch.randint(5, 60, (2, 6))
    loaded.train()
    loaded(ids, labels=ids).loss.backward()
    assert loaded.bert.embeddings.word_embeddings.weight.grad is not None


def test_pretraining_loss_is_mlm_plus_nsp():
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(**TINY)).eval()
    ids = torch.randint(5, 60, (2, 7))
    nsp = torch.tensor([0, 1])
    out = model(ids, labels=ids, next_sentence_label=nsp)
    mlm = torch.nn.functional.cross_entropy(out.prediction_logits.reshape(-1, 60), ids.reshape(-1))
    expected = mlm + torch.nn.functional.cross_entropy(out.seq_relationship_logits, nsp)
    torch.testing.assert_close(out.loss, expected)


def test_labels_names_round_trip_through_save(tmp_path):
    model = BertForSequenceClassification(
        BertConfig(**TINY, id2label={0: "negative", 1: "neutral", 2: "positive"})
    )
    model.save_pretrained(tmp_path / "m")
    data = json.loads((tmp_path / "m" / "config.json").read_text())
    assert data["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    assert data["architectures"] == ["BertForSequenceClassification"]
    assert "gradient_checkpointing" not in data  # a run-time option
    loaded = BertForSequenceClassification.from_pretrained(tmp_path / "m")
    assert loaded.config.label2id == {"negative": 0, "neutral": 1, "positive": 2}
    assert loaded.config.num_labels == 3


def test_pytorch_model_bin_round_trip(tmp_path):
    model = write_checkpoint(tmp_path / "a", BertForSequenceClassification)
    model.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert (tmp_path / "bin" / "pytorch_model.bin").is_file()
    loaded = BertForSequenceClassification.from_pretrained(tmp_path / "bin").eval()
    ids = torch.randint(5, 60, (2, 5))
    torch.testing.assert_close(loaded(ids).logits, model.eval()(ids).logits)


# -- bad input ------------------------------------------------------------------------------


def test_config_of_another_architecture_is_refused(tmp_path):
    directory = tmp_path / "roberta"
    write_checkpoint(directory)
    data = json.loads((directory / "config.json").read_text())
    data.update(model_type="roberta", architectures=["RobertaForMaskedLM"])
    (directory / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"model_type 'roberta'.*not BERT"):
        BertForSequenceClassification.from_pretrained(directory)


def test_weight_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path):
    directory = tmp_path / "ckpt"
    write_checkpoint(directory)
    data = json.loads((directory / "config.json").read_text())
    data["intermediate_size"] = 30
    (directory / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError) as err:
        BertModel.from_pretrained(directory)
    assert "encoder.layer.0.intermediate.dense.weight: checkpoint (24, 16) vs model (30, 16)" in (
        str(err.value)
    )


def test_classifier_with_another_num_labels_needs_ignore_mismatched_sizes(tmp_path):
    write_checkpoint(tmp_path / "two", BertForSequenceClassification, num_labels=2)
    with pytest.raises(ValueError, match=r"classifier.weight.*ignore_mismatched_sizes"):
        BertForSequenceClassification.from_pretrained(tmp_path / "two", num_labels=5)
    model, info = BertForSequenceClassification.from_pretrained(
        tmp_path / "two", num_labels=5, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert model.classifier.out_features == 5
    assert sorted(info["mismatched_keys"]) == ["classifier.bias", "classifier.weight"]


def test_pickled_bin_file_is_refused(tmp_path):
    directory = tmp_path / "evil"
    write_checkpoint(directory)
    (directory / "model.safetensors").unlink()

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    (directory / "pytorch_model.bin").write_bytes(pickle.dumps({"x": Payload()}))
    with pytest.raises(ValueError, match=r"weights_only=True"):
        BertModel.from_pretrained(directory)


def test_directory_without_weights_lists_what_it_holds(tmp_path):
    directory = tmp_path / "half"
    write_checkpoint(directory)
    (directory / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks.*model.safetensors.*config.json"):
        BertModel.from_pretrained(directory)


def test_random_init_of_an_unknown_name_lists_presets(offline):
    with pytest.raises(FileNotFoundError, match="bert-large-uncased"):
        BertModel.from_pretrained("my-own-bert", random_init=True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_ids": torch.tensor([[2, 60, 3]])}, r"input_ids holds values in \[2, 60\].*60"),
        ({"input_ids": torch.tensor([[2, -1, 3]])}, "outside"),
        ({"input_ids": torch.zeros(1, 33, dtype=torch.long)}, "max_position_embeddings=32"),
        (
            {"input_ids": torch.ones(2, 3, dtype=torch.long), "labels": torch.tensor([0, 3])},
            "num_labels=3",
        ),
    ],
)
def test_bad_forward_inputs_get_one_clear_error(kwargs, match):
    model = BertForSequenceClassification(BertConfig(**TINY, num_labels=3))
    with pytest.raises(ValueError, match=match):
        model(**kwargs)


def test_token_labels_outside_num_labels_but_minus_100_is_fine():
    model = BertForTokenClassification(BertConfig(**TINY, num_labels=3))
    ids = torch.ones(1, 4, dtype=torch.long)
    model(ids, labels=torch.tensor([[-100, 0, 2, -100]]))
    with pytest.raises(ValueError, match="num_labels=3"):
        model(ids, labels=torch.tensor([[-100, 0, 7, 1]]))


# -- speed contracts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls",
    [BertModel, BertForSequenceClassification, BertForTokenClassification, BertForMaskedLM],
)
def test_forward_reads_no_tensor_value_on_the_host(cls):
    """On the meta device any .item()/bool(tensor)/min() read raises, so a forward that
    completes there has no host-device synchronisation (issue 7: ids.min()/max())."""
    with torch.device("meta"):
        model = cls(BertConfig(**TINY, num_labels=3))
        ids = torch.zeros(4, 9, dtype=torch.long)
        mask = torch.ones(4, 9, dtype=torch.long)
        kwargs = {"attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
        if cls is BertForSequenceClassification:
            kwargs["labels"] = torch.zeros(4, dtype=torch.long)
        elif cls is not BertModel:
            kwargs["labels"] = torch.zeros(4, 9, dtype=torch.long)
        out = model(ids, **kwargs)
    assert out[0].device.type == "meta"


def test_old_range_check_would_have_synced():
    """The meta-device probe does catch a host read (so the test above can fail)."""
    ids = torch.zeros(2, 3, dtype=torch.long, device="meta")
    with pytest.raises((RuntimeError, NotImplementedError)):
        bool(ids.min() < 0)


def test_compiles_with_fullgraph_and_matches_eager():
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(**TINY, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ).eval()
    ids = torch.randint(5, 60, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    labels = torch.tensor([0, 2])
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="eager")  # dynamo only: quick
    with torch.no_grad():
        got = compiled(ids, attention_mask=mask, labels=labels)
        expected = model(ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(got.logits, expected.logits)
    torch.testing.assert_close(got.loss, expected.loss)


def test_no_padding_means_no_mask_and_same_result():
    ids = torch.ones(2, 5, dtype=torch.long)
    assert BertModel._attention_mask(torch.ones(2, 5, dtype=torch.long), ids) is None
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[0, 4] = 0
    assert BertModel._attention_mask(mask, ids).shape == (2, 1, 1, 5)
    model = BertModel(BertConfig(**TINY)).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids, attention_mask=torch.ones_like(ids)).last_hidden_state,
            model(ids).last_hidden_state,
        )


def test_gradient_checkpointing_same_grads_fewer_saved_tensors():
    def run(checkpointing: bool):
        torch.manual_seed(0)
        model = BertForSequenceClassification(
            BertConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        )
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        saved = []

        def pack(t):
            saved.append(t.numel())
            return t

        ids = torch.randint(5, 60, (3, 12))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(ids, labels=torch.tensor([0, 1, 1])).loss
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}, sum(saved)

    grads_plain, saved_plain = run(False)
    grads_ckpt, saved_ckpt = run(True)
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_ckpt[name], grad, msg=name)
    assert saved_ckpt < saved_plain / 2


def test_outputs_unpack_like_tuples_and_hidden_states_on_request():
    model = BertModel(BertConfig(**TINY)).eval()
    ids = torch.randint(5, 60, (2, 4))
    out = model(ids, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    assert out.attentions[0].shape == (2, 2, 4, 4)
    hidden, pooled, *_ = model(ids)
    assert hidden.shape == (2, 4, 16) and pooled.shape == (2, 16)
    assert model(ids)[0] is not None and model(ids)["pooler_output"].shape == (2, 16)


def _rows_seen(model, module_name):
    """How many token rows each call of ``module_name`` (an nn.Linear) multiplied."""
    seen = []
    module = model.get_submodule(module_name)
    handle = module.register_forward_hook(
        lambda m, args, out: seen.append(args[0].numel() // m.in_features)
    )
    return seen, handle


@pytest.mark.parametrize("checkpointing", [False, True])
def test_unpadded_batches_skip_padding_with_same_results_and_grads(checkpointing):
    """Token-wise layers see the real tokens only; outputs on real tokens and every
    gradient equal the padded computation's (with and without gradient checkpointing)."""
    config = BertConfig(**TINY, num_labels=3, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, gradient_checkpointing=checkpointing)  # fmt: skip
    ids = torch.randint(5, 60, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    labels = torch.randint(0, 3, (3, 10)).masked_fill(mask == 0, -100)

    def run(unpad):
        torch.manual_seed(0)
        model = BertForTokenClassification(config).train()
        model.bert.unpad = unpad
        seen, handle = _rows_seen(model, "bert.encoder.layer.0.intermediate.dense")
        out = model(ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        handle.remove()
        grads = {n: p.grad for n, p in model.named_parameters()}
        return out, grads, seen

    padded, padded_grads, padded_rows = run(False)
    unpadded, unpadded_grads, unpadded_rows = run(True)
    assert padded_rows[0] == 30 and unpadded_rows[0] == int(mask.sum()) == 18
    real = mask.bool()
    torch.testing.assert_close(unpadded.logits[real], padded.logits[real])
    torch.testing.assert_close(unpadded.loss, padded.loss)
    for name, grad in padded_grads.items():
        torch.testing.assert_close(unpadded_grads[name], grad, msg=name)


def test_left_padding_keeps_the_padded_path():
    """The pooler reads position 0: a batch padded on the left is not unpadded."""
    model = BertModel(BertConfig(**TINY)).eval()
    ids = torch.randint(5, 60, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, :2] = 0
    seen, handle = _rows_seen(model, "encoder.layer.0.intermediate.dense")
    with torch.no_grad():
        got = model(ids, attention_mask=mask)
        model.unpad = False
        expected = model(ids, attention_mask=mask)
    handle.remove()
    assert seen == [12, 12]
    torch.testing.assert_close(got.pooler_output, expected.pooler_output)


def test_classifier_runs_its_last_layer_for_the_first_token_only():
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**TINY, num_labels=3)).eval()
    ids = torch.randint(5, 60, (4, 9))
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[2, 5:] = 0
    seen, handle = _rows_seen(model, "bert.encoder.layer.1.intermediate.dense")
    with torch.no_grad():
        fast = model(ids, attention_mask=mask)
        full = model(ids, attention_mask=mask, output_hidden_states=True)  # every row
    handle.remove()
    assert seen == [4, int(mask.sum())]
    torch.testing.assert_close(fast.logits, full.logits)
    with torch.no_grad():
        out = model.bert(ids, attention_mask=mask, first_token_only=True)
    assert out.last_hidden_state.shape == (4, 1, 16)
