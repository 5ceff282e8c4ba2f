"""Tokenizers for the MoE language model: raw UTF-8 bytes, or byte-level BPE trained with
Hugging Face's ``tokenizers`` library (``pip install 'deepseek-moe[lm]'``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from deepseek.checkpoint.atomic import write_atomically


class ByteTokenizer:
    """One token per UTF-8 byte: 256 ids, nothing to train, every text round-trips.

    >>> tok = ByteTokenizer()
    >>> tok.encode("hé")
    [104, 195, 169]
    >>> tok.decode(tok.encode("hé"))
    'hé'
    """

    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class BPETokenizer:
    """Byte-level BPE (GPT-2 style) from the ``tokenizers`` library.

    >>> tok = BPETokenizer.train(["def f(x):\\n    return x\\n"] * 20, vocab_size=300)
    >>> tok.decode(tok.encode("def f(x):"))
    'def f(x):'
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    @staticmethod
    def _library() -> Any:
        try:
            import tokenizers
        except ImportError:
            raise ImportError(
                "BPETokenizer needs the tokenizers library: pip install 'deepseek-moe[lm]'"
            ) from None
        return tokenizers

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 1024) -> BPETokenizer:
        """Learn merges from ``texts`` (the 256 bytes are always in the vocabulary)."""
        lib = cls._library()
        if vocab_size < 257:
            raise ValueError(f"vocab_size must be > 256 for byte-level BPE, got {vocab_size}")
        tokenizer = lib.Tokenizer(lib.models.BPE())
        tokenizer.pre_tokenizer = lib.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = lib.decoders.ByteLevel()
        trainer = lib.trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=lib.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(tokenizer)

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        return cls(cls._library().Tokenizer.from_file(str(path)))

    def save(self, path: str | os.PathLike) -> Path:
        return write_atomically(path, lambda tmp: self._tokenizer.save(str(tmp)))

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._tokenizer.decode([int(i) for i in ids])


def build_tokenizer(name: str = "byte", path: str | os.PathLike | None = None) -> Any:
    """``"byte"`` or ``"bpe"`` (loaded from ``path``, a ``tokenizers`` JSON file)."""
    if name == "byte":
        return ByteTokenizer()
    if name == "bpe":
        if path is None:
            raise ValueError("tokenizer 'bpe' needs path= (a tokenizers JSON file)")
        return BPETokenizer.load(path)
    raise ValueError(f"unknown tokenizer {name!r}; use 'byte' or 'bpe'")
