"""Fine-tuning data: text- and token-classification datasets, dynamic padding, length buckets.

- ``TextClassificationDataset.from_file(path, tokenizer)`` reads CSV / TSV / JSONL with
  CLUE-style fields (``sentence``, or ``sentence1`` + ``sentence2``; ``label``), maps label
  names to ids (``label_names``, saved with the model as ``id2label``) and tokenizes every
  example once, up front.
- ``TokenClassificationDataset`` does the same for word-level tags (``tokens`` + ``tags``),
  labelling each word's first word piece and ``-100`` elsewhere.
- ``DataCollatorWithPadding`` pads a batch to its longest example (no ``attention_mask`` at
  all when nothing is padded, so attention runs unmasked).
- ``LengthGroupedSampler`` is an ``EpochSampler`` (exact resume: the order is a function of
  seed + epoch, ``start_at`` skips consumed samples) whose batches hold similar lengths.

    >>> from deepseek.nlp import BertTokenizer
    >>> tok = BertTokenizer.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "好", "差"])
    >>> data = TextClassificationDataset(["好", "差差差", "好好"], ["pos", "neg", "pos"], tok)
    >>> data.label_names, data[1]["labels"].item()
    (['neg', 'pos'], 0)
    >>> batch = DataCollatorWithPadding(tok.pad_token_id)([data[0], data[1]])
    >>> batch["input_ids"].tolist(), batch["attention_mask"].tolist()
    ([[2, 5, 3, 0, 0], [2, 6, 6, 6, 3]], [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from deepseek.training.data import EpochSampler

TEXT_FIELDS = ("sentence", "text", "content", "review", "query")
PAIR_FIELDS = (("sentence1", "sentence2"), ("text_a", "text_b"), ("premise", "hypothesis"))
LABEL_FIELDS = ("label", "labels", "label_desc", "category")
TOKEN_FIELDS = ("tokens", "words")
TAG_FIELDS = ("tags", "ner_tags", "labels", "pos_tags")
FORMATS = ("csv", "tsv", "jsonl")


# -- reading files -------------------------------------------------------------------------


def read_records(path: str | os.PathLike, format: str | None = None) -> list[dict[str, Any]]:
    """Rows of a CSV / TSV (header line) or JSONL file as dicts; ``format`` defaults to
    the suffix (``.json`` is read as JSON lines)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    kind = (format or path.suffix.lstrip(".")).lower()
    kind = {"json": "jsonl", "txt": "tsv", "ndjson": "jsonl"}.get(kind, kind)
    if kind not in FORMATS:
        raise ValueError(f"cannot tell the format of {path}: pass format= one of {FORMATS}")
    with open(path, encoding="utf-8", newline="") as f:
        if kind == "jsonl":
            rows = []
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}, line {number}: not valid JSON ({exc})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}, line {number}: expected a JSON object per line")
                rows.append(row)
            return rows
        delimiter = "\t" if kind == "tsv" else ","
        quoting = csv.QUOTE_NONE if kind == "tsv" else csv.QUOTE_MINIMAL
        reader = csv.DictReader(f, delimiter=delimiter, quoting=quoting)
        if reader.fieldnames is None:
            raise ValueError(f"{path} is empty: expected a header line naming the columns")
        return [dict(row) for row in reader]


def _field(
    columns: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str, source: str
) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(
                f"{source} has no {what} column {wanted!r}; columns found: {list(columns)}"
            )
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise ValueError(
        f"{source} has no {what} column (looked for {', '.join(candidates)}); columns found: "
        f"{list(columns)}. Name it with {what.replace(' ', '_')}_field=..."
    )


def _label_names(values: Sequence[Any], label_names: Sequence[str] | None) -> list[str]:
    if label_names is not None:
        return [str(name) for name in label_names]
    unique = sorted({str(v) for v in values})
    if all(v.lstrip("-").isdigit() for v in unique):
        ints = sorted(int(v) for v in unique)
        if ints and ints[0] == 0 and ints[-1] < 10 * len(ints):  # already ids 0..K-1
            return [str(i) for i in range(ints[-1] + 1)]
    return unique


def _label_ids(
    values: Sequence[Any], names: list[str], source: str, what: str = "label"
) -> list[int]:
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for row, value in enumerate(values):
        key = str(value)
        if key not in index:
            raise ValueError(
                f"{source}, example {row}: {what} {value!r} is not one of the {len(names)} "
                f"labels {names}; pass label_names= with every label (the model's "
                "num_labels must match)"
            )
        ids.append(index[key])
    return ids


def _check_lengths(encoded: Any, truncation: bool, max_length: int, source: str) -> None:
    if truncation:
        return
    for row, ids in enumerate(encoded["input_ids"]):
        if len(ids) > max_length:
            raise ValueError(
                f"{source}, example {row}: {len(ids)} tokens, longer than max_length="
                f"{max_length} (the model's position embeddings); pass truncation=True or "
                "shorten the text"
            )


# -- datasets ------------------------------------------------------------------------------


class TextClassificationDataset(Dataset):
    """Sentence (or sentence-pair) classification, tokenized once at construction.

    Items are dicts of 1-D ``input_ids`` / ``token_type_ids`` tensors and a ``labels``
    scalar; batch them with ``DataCollatorWithPadding``. ``label_names[i]`` is the name of
    class ``i`` (pass it as ``id2label`` to the model so it is saved with it).
    """

    def __init__(
        self,
        texts: Sequence[str],
        labels: Sequence[Any],
        tokenizer: Any,
        *,
        text_pairs: Sequence[str] | None = None,
        label_names: Sequence[str] | None = None,
        max_length: int = 128,
        truncation: bool = True,
        source: str = "data",
    ) -> None:
        if len(texts) != len(labels):
            raise ValueError(f"{source}: {len(texts)} texts but {len(labels)} labels")
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise ValueError(f"{source}: {len(texts)} texts but {len(text_pairs)} text pairs")
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{source}, example {row}: text is {type(text).__name__}")
        self.label_names = _label_names(labels, label_names)
        self.label_ids = _label_ids(labels, self.label_names, source)
        encoded = tokenizer(
            list(texts),
            None if text_pairs is None else list(text_pairs),
            truncation=truncation,
            max_length=max_length,
            return_attention_mask=False,
        )
        _check_lengths(encoded, truncation, max_length, source)
        self.input_ids = [torch.tensor(ids, dtype=torch.long) for ids in encoded["input_ids"]]
        self.token_type_ids = [torch.tensor(t, dtype=torch.long) for t in encoded["token_type_ids"]]
        self.labels = torch.tensor(self.label_ids, dtype=torch.long)
        self.lengths = [len(ids) for ids in self.input_ids]

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        tokenizer: Any,
        *,
        text_field: str | None = None,
        text_pair_field: str | None = None,
        label_field: str | None = None,
        format: str | None = None,
        label_names: Sequence[str] | None = None,
        max_length: int = 128,
        truncation: bool = True,
    ) -> TextClassificationDataset:
        """Read CSV / TSV / JSONL; fields default to CLUE's names (``sentence``, or
        ``sentence1`` + ``sentence2``, and ``label``)."""
        rows = read_records(path, format)
        source = str(path)
        if not rows:
            raise ValueError(f"{source} holds no examples")
        columns = list(rows[0])
        pairs = None
        if text_field is None and text_pair_field is None:
            for first, second in PAIR_FIELDS:
                if first in columns and second in columns:
                    text_field, text_pair_field = first, second
                    break
        text_field = _field(columns, text_field, TEXT_FIELDS, "text", source)
        label_field = _field(columns, label_field, LABEL_FIELDS, "label", source)
        if text_pair_field is not None:
            text_pair_field = _field(columns, text_pair_field, (), "text pair", source)
            pairs = [str(row.get(text_pair_field) or "") for row in rows]
        texts = [str(row.get(text_field) or "") for row in rows]
        labels = [row.get(label_field) for row in rows]
        return cls(
            texts,
            labels,
            tokenizer,
            text_pairs=pairs,
            label_names=label_names,
            max_length=max_length,
            truncation=truncation,
            source=source,
        )

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids[index],
            "token_type_ids": self.token_type_ids[index],
            "labels": self.labels[index],
        }


class TokenClassificationDataset(Dataset):
    """Word-level tagging (NER, POS): each word's first word piece carries its tag, the
    other pieces and the special tokens ``-100`` (ignored by the loss)."""

    def __init__(
        self,
        words: Sequence[Sequence[str]],
        tags: Sequence[Sequence[Any]],
        tokenizer: Any,
        *,
        label_names: Sequence[str] | None = None,
        max_length: int = 128,
        truncation: bool = True,
        source: str = "data",
    ) -> None:
        if len(words) != len(tags):
            raise ValueError(f"{source}: {len(words)} word lists but {len(tags)} tag lists")
        for row, (w, t) in enumerate(zip(words, tags, strict=True)):
            if len(w) != len(t):
                raise ValueError(f"{source}, example {row}: {len(w)} words but {len(t)} tags")
        flat = [tag for row in tags for tag in row]
        self.label_names = _label_names(flat, label_names)
        index = {name: i for i, name in enumerate(self.label_names)}
        _label_ids(flat, self.label_names, source, what="tag")  # one clear error if unknown
        encoded = tokenizer(
            [list(w) for w in words],
            is_split_into_words=True,
            truncation=truncation,
            max_length=max_length,
            return_attention_mask=False,
        )
        _check_lengths(encoded, truncation, max_length, source)
        self.input_ids, self.token_type_ids, self.labels = [], [], []
        for row, encoding in enumerate(encoded.encodings):
            labels, previous = [], None
            for word in encoding.word_ids:
                first = word is not None and word != previous
                labels.append(index[str(tags[row][word])] if first else -100)
                previous = word
            self.input_ids.append(torch.tensor(encoding.ids, dtype=torch.long))
            self.token_type_ids.append(torch.tensor(encoding.type_ids, dtype=torch.long))
            self.labels.append(torch.tensor(labels, dtype=torch.long))
        self.lengths = [len(ids) for ids in self.input_ids]

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        tokenizer: Any,
        *,
        tokens_field: str | None = None,
        tags_field: str | None = None,
        format: str | None = None,
        label_names: Sequence[str] | None = None,
        max_length: int = 128,
        truncation: bool = True,
    ) -> TokenClassificationDataset:
        """JSONL rows with lists (``{"tokens": [...], "tags": [...]}``), or CSV / TSV with
        space-separated tokens and tags."""
        rows = read_records(path, format)
        source = str(path)
        if not rows:
            raise ValueError(f"{source} holds no examples")
        columns = list(rows[0])
        tokens_field = _field(columns, tokens_field, TOKEN_FIELDS, "tokens", source)
        tags_field = _field(columns, tags_field, TAG_FIELDS, "tags", source)

        def as_list(value: Any) -> list[Any]:
            return value.split() if isinstance(value, str) else list(value or [])

        return cls(
            [as_list(r[tokens_field]) for r in rows],
            [as_list(r[tags_field]) for r in rows],
            tokenizer,
            label_names=label_names,
            max_length=max_length,
            truncation=truncation,
            source=source,
        )

    num_labels = TextClassificationDataset.num_labels
    id2label = TextClassificationDataset.id2label

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids[index],
            "token_type_ids": self.token_type_ids[index],
            "labels": self.labels[index],
        }


# -- batching ------------------------------------------------------------------------------


class DataCollatorWithPadding:
    """Pads ``input_ids`` (with ``pad_token_id``), ``token_type_ids`` (0) and per-token
    ``labels`` (-100) to the batch's longest example (rounded up to
    ``pad_to_multiple_of``); adds ``attention_mask`` only when something is padded."""

    def __init__(self, pad_token_id: int = 0, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        ids = [f["input_ids"] for f in features]
        lengths = torch.tensor([len(x) for x in ids])
        longest = int(lengths.max())
        target = longest
        if self.pad_to_multiple_of:
            target = math.ceil(longest / self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {"input_ids": self._pad(ids, self.pad_token_id, target)}
        if "token_type_ids" in features[0]:
            batch["token_type_ids"] = self._pad([f["token_type_ids"] for f in features], 0, target)
        if target != int(lengths.min()):
            batch["attention_mask"] = (torch.arange(target)[None, :] < lengths[:, None]).long()
        if "labels" in features[0]:
            labels = [f["labels"] for f in features]
            if labels[0].dim() == 0:
                batch["labels"] = torch.stack(labels)
            else:
                batch["labels"] = self._pad(labels, -100, target)
        return batch

    @staticmethod
    def _pad(rows: Sequence[torch.Tensor], value: int, length: int) -> torch.Tensor:
        padded = pad_sequence(list(rows), batch_first=True, padding_value=value)
        if padded.shape[1] < length:
            padded = torch.nn.functional.pad(padded, (0, length - padded.shape[1]), value=value)
        return padded


class LengthGroupedSampler(EpochSampler):
    """An ``EpochSampler`` whose consecutive ``batch_size`` indices have similar lengths.

    Per epoch (seed + epoch): shuffle, cut into mega-batches of ``mega_batches`` batches,
    sort each by length (longest first), cut into batches and shuffle the batch order,
    keeping the longest batch first (an out-of-memory shows at once). Sharding, padding,
    ``set_epoch`` and ``start_at`` (exact resume) are ``EpochSampler``'s.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        mega_batches: int = 50,
    ) -> None:
        super().__init__(
            len(lengths),
            shuffle=shuffle,
            seed=seed,
            num_replicas=num_replicas,
            rank=rank,
            drop_last=drop_last,
        )
        if batch_size < 1 or mega_batches < 1:
            raise ValueError("batch_size and mega_batches must be >= 1")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.mega_batches = mega_batches

    def indices(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.shuffle:
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        group = self.batch_size * self.num_replicas  # one step across all replicas
        mega = group * self.mega_batches
        batches: list[list[int]] = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
            batches += [chunk[i : i + group] for i in range(0, len(chunk), group)]
        if self.shuffle and len(batches) > 1:
            longest = max(range(len(batches)), key=lambda b: self.lengths[batches[b][0]])
            batches[0], batches[longest] = batches[longest], batches[0]
            rest = torch.randperm(len(batches) - 1, generator=generator).tolist()
            batches = [batches[0]] + [batches[1 + i] for i in rest]
        flat = [i for batch in batches for i in batch]
        total = self.per_replica * self.num_replicas
        if total > len(flat):
            flat += flat[: total - len(flat)]
        return flat[:total][self.rank :: self.num_replicas]


def text_classification_loader(
    dataset: TextClassificationDataset | TokenClassificationDataset,
    batch_size: int,
    *,
    pad_token_id: int = 0,
    shuffle: bool = True,
    seed: int = 0,
    group_by_length: bool = True,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader with dynamic padding and (when ``group_by_length``) length buckets."""
    if group_by_length:
        sampler: Any = LengthGroupedSampler(dataset.lengths, batch_size, shuffle=shuffle, seed=seed)
    else:
        sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=DataCollatorWithPadding(pad_token_id),
        num_workers=num_workers,
    )
