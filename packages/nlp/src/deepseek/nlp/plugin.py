"""deepseek-nlp's plugin: registers its models. Factories are deferred so that discovering
the plugin imports neither torch nor the model code."""

from __future__ import annotations

from deepseek.plugins import ModelSpec, deferred, hookimpl


@hookimpl
def deepseek_models() -> list[ModelSpec]:
    target = "deepseek.nlp.models.bert:"
    return [
        ModelSpec(
            "bert-base-chinese",
            deferred(target + "bert_base_chinese"),
            "BERT-base encoder, Chinese vocabulary (21128), Hugging Face-compatible keys",
            tags=("nlp", "encoder"),
        ),
        ModelSpec(
            "bert-base-uncased",
            deferred(target + "bert_base_uncased"),
            "BERT-base encoder, English uncased vocabulary (30522), Hugging Face-compatible keys",
            tags=("nlp", "encoder"),
        ),
        ModelSpec(
            "bert",
            deferred(target + "bert_base_uncased"),
            "BERT encoder from config fields (BERT-base defaults), e.g. num_hidden_layers=4",
            tags=("nlp", "encoder"),
        ),
        ModelSpec(
            "bert-tiny",
            deferred(target + "bert_tiny"),
            "2-layer, 128-wide BERT encoder for tests and demos",
            tags=("nlp", "encoder"),
        ),
    ]
