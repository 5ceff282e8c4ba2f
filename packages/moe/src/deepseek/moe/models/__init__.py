"""Models built from MoE layers: ``MoETransformerLM`` (registered as ``moe-lm``)."""

from __future__ import annotations

from deepseek.moe.models.tokenizer import BPETokenizer, ByteTokenizer, build_tokenizer
from deepseek.moe.models.transformer import KVCache, MoETransformerConfig, MoETransformerLM

__all__ = [
    "BPETokenizer",
    "ByteTokenizer",
    "KVCache",
    "MoETransformerConfig",
    "MoETransformerLM",
    "build_tokenizer",
]
