"""``BertTokenizer``: BERT's WordPiece tokenizer on the Hugging Face ``tokenizers`` engine.

The pipeline is BERT's: clean text (control characters removed, whitespace normalised),
every CJK character split into its own word, optional lower-casing and accent stripping,
punctuation split, then greedy longest-match WordPiece with ``[UNK]`` for a word with no
match or longer than ``max_input_chars_per_word``. ``[CLS] A [SEP] (B [SEP])`` are added
with token types 0/1. All of it runs in Rust (``tokenizers``), built from ``vocab.txt`` when
a directory has no ``tokenizer.json``.

    >>> tok = BertTokenizer.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    ...                                 "我", "爱", "bert", "##s", "!"])
    >>> tok.tokenize("我爱BERTs!")
    ['我', '爱', 'bert', '##s', '!']
    >>> batch = tok(["我爱bert", "爱"], padding=True, return_tensors="pt")
    >>> batch["input_ids"].tolist()
    [[2, 5, 6, 7, 3], [2, 6, 3, 0, 0]]
    >>> batch["attention_mask"].tolist()
    [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from deepseek.nlp import hub

SPECIAL_TOKEN_NAMES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
DEFAULT_SPECIAL = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second")
PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
VERY_LARGE = int(1e30)


def read_vocab(path: str | os.PathLike) -> dict[str, int]:
    """``vocab.txt``: one token per line, its id the line number (BERT's format)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"vocab file {path} is not UTF-8 text ({exc}); is it a vocab.txt?"
        ) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return _vocab_from_tokens([line.rstrip("\r") for line in lines], str(path))


def _vocab_from_tokens(tokens: Sequence[str], source: str) -> dict[str, int]:
    if not tokens:
        raise ValueError(
            f"the vocabulary from {source} is empty: a BERT vocab.txt has one token a line"
        )
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        if token == "" or token.strip() != token or "\n" in token:
            raise ValueError(
                f"the vocabulary from {source} is malformed: line {index + 1} holds "
                f"{token!r} (tokens are non-empty and carry no surrounding whitespace)"
            )
        if token in vocab:
            raise ValueError(
                f"the vocabulary from {source} is malformed: {token!r} appears on lines "
                f"{vocab[token] + 1} and {index + 1}"
            )
        vocab[token] = index
    return vocab


class BatchEncoding(dict):
    """A ``dict`` of model inputs (``input_ids``, ``token_type_ids``, ``attention_mask``,
    optional ``offset_mapping`` / ``special_tokens_mask``) that also keeps the
    ``tokenizers`` encodings (``.encodings``)."""

    def __init__(self, data: Mapping[str, Any], encodings: list[Any] | None = None) -> None:
        super().__init__(data)
        self.encodings = encodings

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device: Any) -> BatchEncoding:
        return BatchEncoding(
            {k: v.to(device) if hasattr(v, "to") else v for k, v in self.items()}, self.encodings
        )


class BertTokenizer:
    """BERT WordPiece tokenizer with the transformers call signature.

    ``tokenizer(text, text_pair=None, padding=False, truncation=False, max_length=None,
    return_tensors=None, return_offsets_mapping=False, ...)`` encodes one text, a pair,
    or a batch (lists); ``decode`` / ``tokenize`` / ``convert_*`` as in transformers.
    Build one with ``from_pretrained(dir_or_name)``, ``BertTokenizer(vocab_file)`` or
    ``from_vocab(tokens)``.
    """

    model_input_names = ("input_ids", "token_type_ids", "attention_mask")

    def __init__(
        self,
        vocab_file: str | os.PathLike | None = None,
        *,
        vocab: Mapping[str, int] | None = None,
        tokenizer_file: str | os.PathLike | None = None,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        model_max_length: int = 512,
        max_input_chars_per_word: int = 100,
        **special_tokens: str,
    ) -> None:
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

        unknown = set(special_tokens) - set(SPECIAL_TOKEN_NAMES)
        if unknown:
            raise TypeError(
                f"unknown BertTokenizer argument(s) {sorted(unknown)}; special tokens are "
                f"{', '.join(SPECIAL_TOKEN_NAMES)}"
            )
        self.special = {**DEFAULT_SPECIAL, **special_tokens}
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.model_max_length = model_max_length
        self.max_input_chars_per_word = max_input_chars_per_word
        if tokenizer_file is not None:
            try:
                self._tokenizer = Tokenizer.from_file(os.fspath(tokenizer_file))
            except Exception as exc:  # noqa: BLE001 (tokenizers raises plain Exception)
                raise ValueError(f"{tokenizer_file} is not a valid tokenizer.json: {exc}") from None
            self.vocab = dict(self._tokenizer.get_vocab(with_added_tokens=True))
            if not self.vocab:
                raise ValueError(f"{tokenizer_file} has an empty vocabulary")
        else:
            if (vocab_file is None) == (vocab is None):
                raise TypeError("pass exactly one of vocab_file=, vocab= or tokenizer_file=")
            if vocab_file is not None:
                vocab = read_vocab(vocab_file)
            elif not vocab:
                raise ValueError("the vocabulary is empty: a BERT vocabulary needs tokens")
            self.vocab = dict(vocab)  # type: ignore[arg-type]
            missing = [t for t in self.special.values() if t not in self.vocab]
            if missing:
                raise ValueError(
                    f"the vocabulary ({vocab_file or 'vocab='}) lacks the special token(s) "
                    f"{missing}; a BERT vocab.txt holds {sorted(set(self.special.values()))} "
                    "(or pass e.g. unk_token='<unk>' to name them)"
                )
            tok = Tokenizer(
                models.WordPiece(
                    self.vocab,
                    unk_token=self.special["unk_token"],
                    max_input_chars_per_word=max_input_chars_per_word,
                )
            )
            tok.normalizer = normalizers.BertNormalizer(
                clean_text=True,
                handle_chinese_chars=tokenize_chinese_chars,
                strip_accents=strip_accents,
                lowercase=do_lower_case,
            )
            tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            tok.decoder = decoders.WordPiece(prefix="##")
            self._tokenizer = tok
        self._tokenizer.add_special_tokens(list(dict.fromkeys(self.special.values())))
        self._set_post_processor()
        self.ids_to_tokens = {i: t for t, i in self.vocab.items()}

    def _set_post_processor(self) -> None:
        from tokenizers import processors

        cls, sep = self.special["cls_token"], self.special["sep_token"]
        for token in (cls, sep):
            if self._tokenizer.token_to_id(token) is None:
                raise ValueError(f"the vocabulary lacks the special token {token!r}")
        self._tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0",
            pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, self.token_to_id(cls)), (sep, self.token_to_id(sep))],
        )

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_vocab(cls, tokens: Iterable[str], **kwargs: Any) -> BertTokenizer:
        """From a token list (id = position)."""
        return cls(vocab=_vocab_from_tokens(list(tokens), "the token list"), **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **overrides: Any) -> BertTokenizer:
        """From a Hugging Face-layout directory or a cached model name (see
        ``deepseek.nlp.hub``): ``tokenizer.json`` if present, else ``vocab.txt``, with the
        options in ``tokenizer_config.json``; ``overrides`` win over that file."""
        directory = hub.resolve_model_dir(
            name_or_path, needs=(("tokenizer.json", "vocab.txt"),), what="tokenizer"
        )
        options: dict[str, Any] = {}
        config_file = directory / "tokenizer_config.json"
        if config_file.is_file():
            config = hub.read_json(config_file)
            for key in (
                "do_lower_case",
                "strip_accents",
                "tokenize_chinese_chars",
                "model_max_length",
                *SPECIAL_TOKEN_NAMES,
            ):
                value = config.get(key)
                if isinstance(value, Mapping):  # AddedToken as a dict
                    value = value.get("content")
                if value is not None:
                    options[key] = value
            if options.get("model_max_length", 0) > VERY_LARGE // 2:
                options.pop("model_max_length")  # transformers' "no limit" sentinel
        options.update(overrides)
        if (directory / "tokenizer.json").is_file() and "vocab" not in options:
            return cls(tokenizer_file=directory / "tokenizer.json", **options)
        if not (directory / "vocab.txt").is_file():
            raise FileNotFoundError(f"{directory} has neither tokenizer.json nor vocab.txt")
        return cls(directory / "vocab.txt", **options)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``vocab.txt``, ``tokenizer.json``, ``tokenizer_config.json`` and
        ``special_tokens_map.json`` (the Hugging Face layout), each atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        ordered = sorted(self.vocab, key=self.vocab.__getitem__)
        hub.atomic_write_bytes(directory / "vocab.txt", ("\n".join(ordered) + "\n").encode("utf-8"))
        hub.atomic_write_bytes(
            directory / "tokenizer.json", self._tokenizer.to_str().encode("utf-8")
        )
        hub.atomic_write_json(
            directory / "tokenizer_config.json",
            {
                "tokenizer_class": "BertTokenizer",
                "do_lower_case": self.do_lower_case,
                "strip_accents": self.strip_accents,
                "tokenize_chinese_chars": self.tokenize_chinese_chars,
                "model_max_length": self.model_max_length,
                **self.special,
            },
        )
        hub.atomic_write_json(directory / "special_tokens_map.json", dict(self.special))

    # -- vocabulary -----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int:
        index = self._tokenizer.token_to_id(token)
        return self.unk_token_id if index is None else index

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return self.token_to_id(tokens)
        return [self.token_to_id(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> str | list[str]:
        if isinstance(ids, int):
            return self._tokenizer.id_to_token(ids)
        return [self._tokenizer.id_to_token(int(i)) for i in ids]

    def __getattr__(self, name: str) -> Any:
        # cls_token / cls_token_id, pad_token / pad_token_id, ...
        special = self.__dict__.get("special", {})
        if name in special:
            return special[name]
        if name.endswith("_id") and name[:-3] in special:
            return self._tokenizer.token_to_id(special[name[:-3]])
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    @property
    def all_special_ids(self) -> list[int]:
        return [self.token_to_id(t) for t in dict.fromkeys(self.special.values())]

    # -- encoding -------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        """Word pieces of ``text`` without special tokens."""
        return self._tokenizer.encode(text, add_special_tokens=False).tokens

    def encode(
        self,
        text: str,
        text_pair: str | None = None,
        add_special_tokens: bool = True,
        **kwargs: Any,
    ) -> list[int]:
        return self(text, text_pair, add_special_tokens=add_special_tokens, **kwargs)["input_ids"]

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def batch_decode(self, batch: Any, skip_special_tokens: bool = False) -> list[str]:
        if hasattr(batch, "tolist"):
            batch = batch.tolist()
        return self._tokenizer.decode_batch(
            [list(b) for b in batch], skip_special_tokens=skip_special_tokens
        )

    def __call__(
        self,
        text: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str = False,
        max_length: int | None = None,
        stride: int = 0,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool = True,
        return_attention_mask: bool = True,
        return_offsets_mapping: bool = False,
        return_special_tokens_mask: bool = False,
        return_length: bool = False,
        is_split_into_words: bool = False,
    ) -> BatchEncoding:
        """Encode a text, a pair, or lists of them (a batch). With
        ``is_split_into_words=True`` a text is a list of words (one example) or a list of
        such lists; ``.encodings[i].word_ids`` then maps tokens back to words."""
        if is_split_into_words:
            single = bool(text) and all(isinstance(w, str) for w in text)
            if single:
                text = [text]  # type: ignore[list-item]
            return self._encode(
                list(text),
                None,
                single,
                is_split_into_words,
                add_special_tokens,
                padding,
                truncation,
                max_length,
                stride,
                pad_to_multiple_of,
                return_tensors,
                return_token_type_ids,
                return_attention_mask,
                return_offsets_mapping,
                return_special_tokens_mask,
                return_length,
            )
        single = isinstance(text, str)
        if single:
            if text_pair is not None and not isinstance(text_pair, str):
                raise TypeError("text is one string, so text_pair must be one string too")
            texts: list[Any] = [text]
            # As transformers: an empty pair string means no pair.
            pairs = [text_pair] if text_pair else None
        else:
            if not isinstance(text, Sequence) or not all(isinstance(t, str) for t in text):
                raise TypeError(
                    f"text must be a string or a list of strings, got {type(text).__name__}"
                )
            texts = list(text)
            pairs = None if text_pair is None else list(text_pair)
            if pairs is not None and len(pairs) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(pairs)} text_pairs")
        return self._encode(
            texts,
            pairs,
            single,
            False,
            add_special_tokens,
            padding,
            truncation,
            max_length,
            stride,
            pad_to_multiple_of,
            return_tensors,
            return_token_type_ids,
            return_attention_mask,
            return_offsets_mapping,
            return_special_tokens_mask,
            return_length,
        )

    def _encode(
        self,
        texts: list[Any],
        pairs: list[Any] | None,
        single: bool,
        pretokenized: bool,
        add_special_tokens: bool,
        padding: bool | str,
        truncation: bool | str,
        max_length: int | None,
        stride: int,
        pad_to_multiple_of: int | None,
        return_tensors: str | None,
        return_token_type_ids: bool,
        return_attention_mask: bool,
        return_offsets_mapping: bool,
        return_special_tokens_mask: bool,
        return_length: bool,
    ) -> BatchEncoding:
        pad_strategy = _padding_strategy(padding)
        trunc_strategy = _truncation_strategy(truncation)
        limit = max_length
        if limit is None and (trunc_strategy or pad_strategy == "max_length"):
            limit = self.model_max_length
        tok = self._tokenizer
        if trunc_strategy:
            tok.enable_truncation(limit, stride=stride, strategy=trunc_strategy)
        else:
            tok.no_truncation()
        if pad_strategy == "do_not_pad":
            tok.no_padding()
        else:
            tok.enable_padding(
                pad_id=self.pad_token_id,
                pad_token=self.special["pad_token"],
                length=limit if pad_strategy == "max_length" else None,
                pad_to_multiple_of=pad_to_multiple_of,
            )
        inputs = texts if pairs is None else list(zip(texts, pairs, strict=True))
        try:
            # Without offsets (or word ids) the engine's fast path skips tracking them.
            tracked = return_offsets_mapping or pretokenized
            encode = tok.encode_batch if tracked else tok.encode_batch_fast
            encodings = encode(
                inputs, is_pretokenized=pretokenized, add_special_tokens=add_special_tokens
            )
        except Exception as exc:  # noqa: BLE001 (tokenizers raises plain Exception)
            raise ValueError(f"could not encode the batch: {exc}") from None
        data: dict[str, Any] = {"input_ids": [e.ids for e in encodings]}
        if return_token_type_ids:
            data["token_type_ids"] = [e.type_ids for e in encodings]
        if return_attention_mask:
            data["attention_mask"] = [e.attention_mask for e in encodings]
        if return_offsets_mapping:
            data["offset_mapping"] = [e.offsets for e in encodings]
        if return_special_tokens_mask:
            data["special_tokens_mask"] = [e.special_tokens_mask for e in encodings]
        if return_length:
            data["length"] = [len(e.ids) for e in encodings]
        if return_tensors is not None:
            data = _to_tensors(data, return_tensors)
        elif single:
            data = {k: v[0] for k, v in data.items()}
        return BatchEncoding(data, encodings)


def _padding_strategy(padding: bool | str) -> str:
    if padding is True:
        return "longest"
    if padding is False or padding is None:
        return "do_not_pad"
    if padding not in PADDING_STRATEGIES:
        raise ValueError(f"padding must be a bool or one of {PADDING_STRATEGIES}, got {padding!r}")
    return padding


def _truncation_strategy(truncation: bool | str) -> str | None:
    if truncation is True:
        return "longest_first"
    if truncation in (False, None, "do_not_truncate"):
        return None
    if truncation not in TRUNCATION_STRATEGIES:
        raise ValueError(
            f"truncation must be a bool or one of {TRUNCATION_STRATEGIES}, got {truncation!r}"
        )
    return truncation  # type: ignore[return-value]


def _to_tensors(data: dict[str, Any], kind: str) -> dict[str, Any]:
    if kind != "pt":
        raise ValueError(f"return_tensors={kind!r} is not supported; use 'pt' (torch tensors)")
    import torch

    lengths = {len(row) for row in data["input_ids"]}
    if len(lengths) > 1:
        raise ValueError(
            f"the texts encode to different lengths ({min(lengths)}..{max(lengths)}); "
            "pass padding=True (or padding='max_length') to return one tensor"
        )
    out = {}
    for key, value in data.items():
        if key == "length":
            out[key] = torch.tensor(value, dtype=torch.long)
        elif key == "offset_mapping":
            out[key] = torch.tensor(value, dtype=torch.long).reshape(len(value), -1, 2)
        else:
            out[key] = torch.tensor(value, dtype=torch.long)
    return out


def load_tokenizer_json(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON of a ``tokenizer.json`` (for inspection)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
