"""deepseek-nlp's plugin: registers its models. Factories are deferred so that discovering
the plugin imports neither torch nor the model code.

Metrics for text and token classification are core's ``accuracy`` and ``f1_macro``
(epoch-level, ``ignore_index=-100`` for padded tokens); registering the same names here
would clash, so this plugin adds none.
"""

from __future__ import annotations

from deepseek.plugins import ModelSpec, deferred, hookimpl

_BERT = "deepseek.nlp.models.bert:"


@hookimpl
def deepseek_models() -> list[ModelSpec]:
    tags = ("nlp", "encoder")
    return [
        ModelSpec(
            "bert-base-chinese",
            deferred(_BERT + "bert_base_chinese"),
            "BERT-base encoder, Chinese vocabulary (21128), Hugging Face-compatible keys",
            tags=tags,
        ),
        ModelSpec(
            "bert-base-uncased",
            deferred(_BERT + "bert_base_uncased"),
            "BERT-base encoder, English uncased vocabulary (30522), Hugging Face-compatible keys",
            tags=tags,
        ),
        ModelSpec(
            "bert-large-uncased",
            deferred(_BERT + "bert_large_uncased"),
            "BERT-large encoder (24 layers, hidden 1024), English uncased vocabulary",
            tags=tags,
        ),
        ModelSpec(
            "bert",
            deferred(_BERT + "bert_base_uncased"),
            "BERT encoder from config fields (BERT-base defaults), e.g. num_hidden_layers=4",
            tags=tags,
        ),
        ModelSpec(
            "bert-tiny",
            deferred(_BERT + "bert_tiny"),
            "2-layer, 128-wide BERT encoder for tests and demos",
            tags=tags,
        ),
        ModelSpec(
            "bert_classifier",
            deferred(_BERT + "bert_classifier"),
            "BertForSequenceClassification: {pretrained: DIR or name, num_labels: N} "
            "(fine-tuning), or a preset with random weights",
            tags=("nlp", "classifier"),
        ),
    ]
