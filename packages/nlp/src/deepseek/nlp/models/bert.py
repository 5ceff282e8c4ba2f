"""BERT, the whole model in one file (the Hugging Face "one model, one file" style).

Module and parameter names follow Hugging Face's ``BertModel`` exactly
(``embeddings.word_embeddings.weight``, ``encoder.layer.0.attention.self.query.weight``,
..., ``pooler.dense.bias``), so a Hugging Face checkpoint maps onto this model key for key,
and ``BertConfig`` reads Hugging Face ``config.json`` files.

    >>> import torch
    >>> config = BertConfig.from_preset("bert-tiny")
    >>> model = BertModel(config).eval()
    >>> ids = torch.randint(0, config.vocab_size, (2, 8))
    >>> last_hidden_state, pooled = model(ids)
    >>> tuple(last_hidden_state.shape), tuple(pooled.shape)
    ((2, 8, 128), (2, 128))
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}

# Hugging Face values for the published checkpoints (their config.json files).
PRESETS: dict[str, dict[str, Any]] = {
    "bert-base-chinese": {"vocab_size": 21128},
    "bert-base-uncased": {"vocab_size": 30522},
    "bert-tiny": {  # google/bert_uncased_L-2_H-128_A-2
        "vocab_size": 30522,
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 512,
    },
}


@dataclass
class BertConfig:
    """BERT hyper-parameters; field names are Hugging Face ``config.json`` keys.

    >>> BertConfig.from_dict({"hidden_size": 256, "num_attention_heads": 4,
    ...                       "architectures": ["BertForMaskedLM"]}).hidden_size
    256
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _checked(f.name, getattr(self, f.name), f.default))
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"BertConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"BertConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"BertConfig.hidden_act {self.hidden_act!r} is not supported; "
                f"choose one of {sorted(ACTIVATIONS)}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"BertConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.layer_norm_eps <= 0 or self.initializer_range < 0:
            raise ValueError("BertConfig.layer_norm_eps must be > 0 and initializer_range >= 0")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"BertConfig.pad_token_id ({self.pad_token_id}) must be in "
                f"[0, vocab_size={self.vocab_size}) or None"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BertConfig:
        """Build from a Hugging Face config dict; keys that are not fields are ignored."""
        if not isinstance(data, Mapping):
            raise TypeError(f"BertConfig.from_dict expects a mapping, got {type(data).__name__}")
        # The one HF option that changes the architecture silently if ignored.
        position_type = data.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(
                f"position_embedding_type {position_type!r} is not supported; "
                "only 'absolute' position embeddings are implemented"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})

    @classmethod
    def from_json_file(cls, path: str | Path) -> BertConfig:
        """Read a Hugging Face ``config.json``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"BERT config file not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> BertConfig:
        """A published configuration (``bert-base-chinese``, ``bert-tiny``, ...) with
        ``overrides`` applied; an override that is not a field is an error."""
        if name not in PRESETS:
            raise ValueError(f"unknown BERT preset {name!r}; known presets: {sorted(PRESETS)}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown BertConfig field(s) {unknown}; known fields: {sorted(names)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _checked(name: str, value: Any, default: Any) -> Any:
    """``value`` if it has the field's type (ints accepted for floats), else a TypeError."""
    if isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:  # int fields; pad_token_id may also be None
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            value is None and name == "pad_token_id"
        )
    if not ok:
        raise TypeError(
            f"BertConfig.{name} must be a {type(default).__name__}, "
            f"got {type(value).__name__} ({value!r})"
        )
    return value


class BertEmbeddings(nn.Module):
    """Word + absolute position + token type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.word_embeddings = nn.Embedding(
            config.vocab_size, hidden, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, hidden)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        embeddings = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(embeddings))


class BertSelfAttention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, length, hidden = hidden_states.shape

        def heads(x: torch.Tensor) -> torch.Tensor:  # (B, L, H*D) -> (B, H, L, D)
            return x.view(batch, length, self.num_heads, -1).transpose(1, 2)

        context = F.scaled_dot_product_attention(
            heads(self.query(hidden_states)),
            heads(self.key(hidden_states)),
            heads(self.value(hidden_states)),
            attn_mask=mask,
            dropout_p=self.dropout_p if self.training else 0.0,
        )
        return context.transpose(1, 2).reshape(batch, length, hidden)


class BertResidualOutput(nn.Module):
    """Dense, dropout, then LayerNorm of the residual sum: HF's ``BertSelfOutput`` and
    ``BertOutput`` (same parameter names: ``dense``, ``LayerNorm``)."""

    def __init__(self, in_features: int, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertResidualOutput(config.hidden_size, config)

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(hidden_states, mask), hidden_states)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACTIVATIONS[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states))


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertResidualOutput(config.intermediate_size, config)

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        attended = self.attention(hidden_states, mask)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layer:
            hidden_states = layer(hidden_states, mask)
        return hidden_states


class BertPooler(nn.Module):
    """tanh(dense(hidden state of the first token)), the ``[CLS]`` summary."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden_states[:, 0]))


class BertModel(nn.Module):
    """The BERT encoder with pooler; ``state_dict()`` keys are Hugging Face's.

    ``forward(input_ids, attention_mask=None, token_type_ids=None)`` takes ``(batch,
    length)`` integer tensors (``attention_mask``: 1 = attend, 0 = padding) and returns
    ``(last_hidden_state, pooled)`` of shapes ``(batch, length, hidden)`` and
    ``(batch, hidden)``.

    >>> import torch
    >>> model = BertModel(BertConfig.from_preset("bert-tiny")).eval()
    >>> ids = torch.tensor([[101, 2769, 102, 0]])
    >>> hidden, pooled = model(ids, attention_mask=torch.tensor([[1, 1, 1, 0]]))
    >>> tuple(hidden.shape)
    (1, 4, 128)
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        if not isinstance(config, BertConfig):
            raise TypeError(
                f"BertModel expects a BertConfig, got {type(config).__name__}; "
                "use BertConfig.from_dict(...) for a dict"
            )
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # BERT's initialisation: N(0, initializer_range) weights, zero biases, unit norms.
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_ids("input_ids", input_ids, None, self.config.vocab_size)
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"input_ids has length {input_ids.shape[1]}, longer than "
                f"max_position_embeddings={self.config.max_position_embeddings}; "
                "truncate the sequences"
            )
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        self._check_ids("token_type_ids", token_type_ids, input_ids, self.config.type_vocab_size)

        hidden_states = self.embeddings(input_ids, token_type_ids)
        mask = None
        if attention_mask is not None:
            if (
                not isinstance(attention_mask, torch.Tensor)
                or attention_mask.shape != input_ids.shape
            ):
                raise ValueError(
                    f"attention_mask must be a tensor of shape {tuple(input_ids.shape)} "
                    "(1 = attend, 0 = padding), got "
                    f"{getattr(attention_mask, 'shape', type(attention_mask).__name__)}"
                )
            # Additive mask (batch, 1, 1, length): a very negative score for padding keys,
            # finite so a fully padded row stays finite instead of NaN.
            keep = attention_mask.to(torch.bool)[:, None, None, :]
            mask = torch.zeros(keep.shape, dtype=hidden_states.dtype, device=keep.device)
            mask = mask.masked_fill(~keep, torch.finfo(hidden_states.dtype).min)
        last_hidden_state = self.encoder(hidden_states, mask)
        return last_hidden_state, self.pooler(last_hidden_state)

    @staticmethod
    def _check_ids(name: str, ids: Any, like: torch.Tensor | None, num_embeddings: int) -> None:
        if (
            not isinstance(ids, torch.Tensor)
            or ids.dtype.is_floating_point
            or ids.dtype
            in (
                torch.bool,
                torch.complex64,
                torch.complex128,
            )
        ):
            raise TypeError(f"{name} must be an integer tensor, got {_describe(ids)}")
        if ids.dim() != 2 or (like is not None and ids.shape != like.shape):
            expected = "(batch, length)" if like is None else str(tuple(like.shape))
            raise ValueError(f"{name} must have shape {expected}, got {tuple(ids.shape)}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= num_embeddings):
            raise ValueError(
                f"{name} holds values in [{int(ids.min())}, {int(ids.max())}], outside "
                f"[0, {num_embeddings}); check the tokenizer matches the config"
            )


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor"
    return type(value).__name__


def bert_base_chinese(**overrides: Any) -> BertModel:
    """BERT-base with the Chinese vocabulary; ``overrides`` replace config fields."""
    return BertModel(BertConfig.from_preset("bert-base-chinese", **overrides))


def bert_base_uncased(**overrides: Any) -> BertModel:
    """BERT-base with the English uncased vocabulary; ``overrides`` replace config fields."""
    return BertModel(BertConfig.from_preset("bert-base-uncased", **overrides))


def bert_tiny(**overrides: Any) -> BertModel:
    """2 layers, hidden 128, 2 heads; ``overrides`` replace config fields."""
    return BertModel(BertConfig.from_preset("bert-tiny", **overrides))
