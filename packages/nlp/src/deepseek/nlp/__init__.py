"""DeepSeek NLP: the BERT family with Hugging Face-compatible parameter names.

Names are imported on first use, so ``import deepseek.nlp`` stays cheap::

    >>> from deepseek.nlp import BertConfig
    >>> BertConfig.from_preset("bert-tiny").hidden_size
    128
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_BERT = "deepseek.nlp.models.bert"
_EXPORTS = {
    "BertConfig": _BERT,
    "BertModel": _BERT,
    "BertForSequenceClassification": _BERT,
    "BertForTokenClassification": _BERT,
    "BertForMaskedLM": _BERT,
    "BertForPreTraining": _BERT,
    "BertTokenizer": "deepseek.nlp.tokenization",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'deepseek.nlp' has no attribute {name!r}")
