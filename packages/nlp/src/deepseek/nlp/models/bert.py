"""BERT, the whole model in one file (the Hugging Face "one model, one file" style).

Module and parameter names follow Hugging Face's ``modeling_bert.py`` exactly
(``embeddings.word_embeddings.weight``, ``encoder.layer.0.attention.self.query.weight``,
..., ``pooler.dense.bias``; task models put the encoder under ``bert.``), so a Hugging Face
checkpoint maps onto these models key for key, ``BertConfig`` reads and writes Hugging
Face ``config.json`` files, and ``save_pretrained`` writes a directory that transformers
loads.

    >>> import torch
    >>> config = BertConfig.from_preset("bert-tiny")
    >>> model = BertModel(config).eval()
    >>> ids = torch.randint(0, config.vocab_size, (2, 8))
    >>> out = model(ids)
    >>> tuple(out.last_hidden_state.shape), tuple(out.pooler_output.shape)
    ((2, 8, 128), (2, 128))

Speed: attention runs through ``scaled_dot_product_attention`` with a boolean padding
mask, and with no mask at all when no token is padding. The forward has no
host-device synchronisation on accelerators (see ``_check_index_range``) and no graph
break under ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from deepseek.nlp import hub

logger = logging.getLogger("deepseek.nlp")

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")

# Hugging Face values for the published checkpoints (their config.json files); fields not
# given keep BERT-base's defaults. The model registry and random_init=True build from here.
PRESETS: dict[str, dict[str, Any]] = {
    "bert-base-chinese": {"vocab_size": 21128},
    "bert-base-uncased": {"vocab_size": 30522},
    "bert-base-cased": {"vocab_size": 28996},
    "bert-large-uncased": {
        "vocab_size": 30522,
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
    },
    "bert-large-cased": {
        "vocab_size": 28996,
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
    },
    "bert-tiny": {  # google/bert_uncased_L-2_H-128_A-2
        "vocab_size": 30522,
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 512,
    },
    "bert-mini": {  # google/bert_uncased_L-4_H-256_A-4
        "vocab_size": 30522,
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
    },
    "bert-small": {  # google/bert_uncased_L-4_H-512_A-8
        "vocab_size": 30522,
        "hidden_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "intermediate_size": 2048,
    },
}
PRESET_ALIASES = {"bert-large": "bert-large-uncased", "bert-base": "bert-base-uncased"}

# Debug switch for accelerators: token ids and labels are range-checked on the CPU for
# free, but on a GPU the check would force a host sync every step (see _check_index_range).
CHECK_INDICES_ON_DEVICE = os.environ.get("DEEPSEEK_NLP_CHECK_INDICES", "") not in ("", "0")


def preset_name(name: str) -> str | None:
    """The preset that ``name`` (``bert-large``, ``google-bert/bert-base-chinese``) means."""
    short = name.strip().rsplit("/", 1)[-1].lower()
    short = PRESET_ALIASES.get(short, short)
    return short if short in PRESETS else None


# -- config -------------------------------------------------------------------------------


@dataclass
class BertConfig:
    """BERT hyper-parameters; field names are Hugging Face ``config.json`` keys.

    >>> BertConfig.from_dict({"hidden_size": 256, "num_attention_heads": 4,
    ...                       "architectures": ["BertForMaskedLM"]}).hidden_size
    256
    >>> BertConfig(num_labels=3).id2label
    {0: 'LABEL_0', 1: 'LABEL_1', 2: 'LABEL_2'}
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
    # Task heads (as in transformers' PretrainedConfig).
    num_labels: int = 2
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    problem_type: str | None = None
    classifier_dropout: float | None = None
    tie_word_embeddings: bool = True
    # Run-time option, not written to config.json.
    gradient_checkpointing: bool = False
    architectures: list[str] | None = field(default=None, repr=False, compare=False)

    _RUNTIME_ONLY: ClassVar[tuple[str, ...]] = ("gradient_checkpointing",)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _checked(f.name, getattr(self, f.name)))
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
            "num_labels",
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
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"BertConfig.{name} must be in [0, 1), got {value}")
        if self.layer_norm_eps <= 0 or self.initializer_range < 0:
            raise ValueError("BertConfig.layer_norm_eps must be > 0 and initializer_range >= 0")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"BertConfig.pad_token_id ({self.pad_token_id}) must be in "
                f"[0, vocab_size={self.vocab_size}) or None"
            )
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ValueError(
                f"BertConfig.problem_type {self.problem_type!r} is not one of {PROBLEM_TYPES}"
            )
        # Label names: id2label wins when given; otherwise LABEL_i for num_labels.
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            if sorted(self.id2label) != list(range(len(self.id2label))):
                raise ValueError(
                    f"BertConfig.id2label keys must be 0..n-1, got {sorted(self.id2label)}"
                )
            self.num_labels = len(self.id2label)
        else:
            self.id2label = {i: f"LABEL_{i}" for i in range(self.num_labels)}
        self.label2id = {name: i for i, name in self.id2label.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **overrides: Any) -> BertConfig:
        """Build from a Hugging Face config dict; keys that are not fields are ignored,
        ``overrides`` must be fields (``num_labels=3`` replaces the label names)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"BertConfig.from_dict expects a mapping, got {type(data).__name__}")
        model_type = data.get("model_type", "bert")
        architectures = data.get("architectures") or []
        if model_type != "bert" or any(
            not str(a).startswith("Bert") for a in architectures if isinstance(a, str)
        ):
            raise ValueError(
                f"this config is for model_type {model_type!r} "
                f"(architectures {architectures}), not BERT: deepseek.nlp's Bert* classes "
                "load BERT checkpoints only (model_type 'bert')"
            )
        # The one HF option that changes the architecture silently if ignored.
        position_type = data.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(
                f"position_embedding_type {position_type!r} is not supported; "
                "only 'absolute' position embeddings are implemented"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown BertConfig field(s) {unknown}; known fields: {sorted(names)}")
        values = {key: value for key, value in data.items() if key in names}
        if "id2label" in values and "num_labels" in values:
            del values["num_labels"]  # transformers derives it from id2label
        if "num_labels" in overrides and "id2label" not in overrides:
            current = values.get("id2label")
            if current is None or len(current) != overrides["num_labels"]:
                values.pop("id2label", None)
        values.pop("label2id", None)  # always rebuilt from id2label
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_json_file(cls, path: str | Path, **overrides: Any) -> BertConfig:
        """Read a Hugging Face ``config.json``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"BERT config file not found: {path}")
        return cls.from_dict(hub.read_json(path), **overrides)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> BertConfig:
        """A published configuration (``bert-base-chinese``, ``bert-tiny``, ...) with
        ``overrides`` applied; an override that is not a field is an error."""
        key = preset_name(name)
        if key is None:
            raise ValueError(f"unknown BERT preset {name!r}; known presets: {sorted(PRESETS)}")
        return cls.from_dict(PRESETS[key], **overrides)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **overrides: Any) -> BertConfig:
        """``config.json`` of a local directory or cached model (see ``deepseek.nlp.hub``)."""
        directory = hub.resolve_model_dir(name_or_path, needs=("config.json",), what="config")
        return cls.from_json_file(directory / "config.json", **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_hf_dict(self, architecture: str | None = None) -> dict[str, Any]:
        """What ``config.json`` holds: transformers' keys (label maps with string keys)."""
        data = {k: v for k, v in self.to_dict().items() if k not in self._RUNTIME_ONLY}
        data.pop("num_labels")  # transformers derives it from id2label
        data["id2label"] = {str(i): name for i, name in self.id2label.items()}
        data["model_type"] = "bert"
        data["position_embedding_type"] = "absolute"
        if architecture is not None:
            data["architectures"] = [architecture]
        return data


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "hidden_act": (str,),
    "hidden_dropout_prob": (float,),
    "attention_probs_dropout_prob": (float,),
    "layer_norm_eps": (float,),
    "initializer_range": (float,),
    "classifier_dropout": (float, type(None)),
    "pad_token_id": (int, type(None)),
    "id2label": (dict, type(None)),
    "label2id": (dict, type(None)),
    "problem_type": (str, type(None)),
    "tie_word_embeddings": (bool,),
    "gradient_checkpointing": (bool,),
    "architectures": (list, type(None)),
}


def _checked(name: str, value: Any) -> Any:
    """``value`` if it has the field's type (ints accepted for floats), else a TypeError."""
    allowed = _FIELD_TYPES.get(name, (int,))
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if not ok:
        names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
        raise TypeError(
            f"BertConfig.{name} must be a {names}, got {type(value).__name__} ({value!r})"
        )
    return value


# -- outputs ------------------------------------------------------------------------------


class ModelOutput:
    """Dataclass outputs that also unpack like a tuple of their non-None fields."""

    def to_tuple(self) -> tuple[Any, ...]:
        values = (getattr(self, f.name) for f in dataclasses.fields(self))  # type: ignore[arg-type]
        return tuple(v for v in values if v is not None)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.to_tuple())

    def __getitem__(self, index: int | str) -> Any:
        return getattr(self, index) if isinstance(index, str) else self.to_tuple()[index]


@dataclass
class BertModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class SequenceClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class TokenClassifierOutput(SequenceClassifierOutput):
    pass


@dataclass
class MaskedLMOutput(SequenceClassifierOutput):
    pass


@dataclass
class BertForPreTrainingOutput(ModelOutput):
    loss: torch.Tensor | None = None
    prediction_logits: torch.Tensor | None = None
    seq_relationship_logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


# -- input checks -------------------------------------------------------------------------


def _check_int_tensor(name: str, ids: Any, like: torch.Tensor | None) -> None:
    """dtype and shape only: metadata, never a device read."""
    if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.is_complex():
        raise TypeError(f"{name} must be an integer tensor, got {_describe(ids)}")
    if ids.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {_describe(ids)}")
    if ids.dim() != 2 or (like is not None and ids.shape != like.shape):
        expected = "(batch, length)" if like is None else str(tuple(like.shape))
        raise ValueError(f"{name} must have shape {expected}, got {tuple(ids.shape)}")


def _check_index_range(
    name: str, values: torch.Tensor, high: int, hint: str, ignore: int | None = None
) -> None:
    """Raise a clear error when ``values`` falls outside ``[0, high)``.

    Reading a tensor's min/max is free on the CPU (the data is already on the host), so
    the check always runs there. On an accelerator it would stall the step on a
    device-to-host copy, so it runs only with ``DEEPSEEK_NLP_CHECK_INDICES=1`` (a debug
    switch); without it an out-of-range id fails inside the embedding kernel instead.
    Under ``torch.compile`` it is skipped (data-dependent Python would break the graph).
    """
    if values.numel() == 0 or torch.compiler.is_compiling():
        return
    if values.device.type != "cpu" and not CHECK_INDICES_ON_DEVICE:
        return
    if ignore is not None:
        values = values[values != ignore]
        if values.numel() == 0:
            return
    low, top = torch.aminmax(values)
    if low < 0 or top >= high:
        raise ValueError(
            f"{name} holds values in [{int(low)}, {int(top)}], outside [0, {high}); {hint}"
        )


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor"
    return type(value).__name__


# -- the encoder --------------------------------------------------------------------------


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

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        length = input_ids.shape[1]
        if position_ids is None:
            positions = self.position_embeddings.weight[:length]
        else:
            positions = self.position_embeddings(position_ids)
        if token_type_ids is None:  # all type 0: one row, broadcast (no gather)
            types = self.token_type_embeddings.weight[0]
        else:
            types = self.token_type_embeddings(token_type_ids)
        embeddings = self.word_embeddings(input_ids) + types + positions
        return self.dropout(self.LayerNorm(embeddings))


# -- MKL-packed weights for CPU inference ------------------------------------------------
# MKL's sgemm repacks the weight matrix on every call; for the short GEMMs of inference
# (batch 1: 128 rows) that is 15-20% of the time. pack_for_inference() packs each weight
# once (inductor's CPU freezing does the same). The layout depends on the row count it is
# packed for: packed for 128 rows it pays from 1 to ~512 rows and not for thousands
# (one 768x3072 matmul on a 2-core AVX-512 Xeon: 2.6x at 8 rows, 1.2x at 64, 1.16x at 128,
# 1.05x at 512, 0.96x at 3000).
PACK_ROWS = 128
PACKED_MAX_ROWS = 1024


@dataclass(frozen=True)
class _PackedWeight:
    """A ``Linear`` weight in MKL's packed layout, and the weight tensor it was made from."""

    packed: torch.Tensor
    data_ptr: int
    version: int

    def matches(self, weight: torch.Tensor) -> bool:
        # An optimizer step, load_state_dict or init changes _version; .to() the pointer.
        return weight.data_ptr() == self.data_ptr and weight._version == self.version


# layer -> its packed weight; weak keys, so a packed layer holds no extra state: its
# state_dict, deepcopy and pickling are untouched, and the pack dies with the layer.
_PACKED: weakref.WeakKeyDictionary[nn.Linear, _PackedWeight] = weakref.WeakKeyDictionary()


def mkl_packing_available() -> bool:
    """Whether this torch build has MKL's packed GEMM (x86 builds do; ARM ones do not)."""
    if not torch.backends.mkl.is_available():
        return False
    try:
        return bool(torch.ops.mkl._mkl_linear and torch.ops.mkl._mkl_reorder_linear_weight)
    except (AttributeError, RuntimeError):
        return False


def _pack(layer: nn.Linear) -> bool:
    weight = layer.weight
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or weight.dim() != 2:
        return False
    with torch.no_grad():
        packed = torch.ops.mkl._mkl_reorder_linear_weight(weight.detach(), PACK_ROWS)
    _PACKED[layer] = _PackedWeight(packed, weight.data_ptr(), weight._version)
    return True


def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)``; through the weight MKL packed for it when ``pack_for_inference()``
    packed ``layer``, autograd and autocast are off, and the weight is still the one packed
    (the same numbers as ``F.linear``; anything else takes ``layer(x)``)."""
    # Cheapest tests first: an unpacked model in eval pays one empty-dict check per layer.
    if not torch.compiler.is_compiling() and _PACKED and not torch.is_grad_enabled():
        packed = _PACKED.get(layer)
        if packed is None:
            return layer(x)
        rows = x.numel() // x.shape[-1] if x.dim() and x.shape[-1] else 0
        if (
            0 < rows <= PACKED_MAX_ROWS
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and packed.matches(layer.weight)
            and not (layer._forward_hooks or layer._forward_pre_hooks)
            and not torch.is_autocast_enabled("cpu")
        ):
            return torch.ops.mkl._mkl_linear(x, packed.packed, layer.weight, layer.bias, rows)
    return layer(x)


@dataclass
class TokenLayout:
    """Where the rows of the encoder's flat ``(tokens, hidden)`` activations sit in the
    ``(batch, length)`` grid of the input.

    Token-wise work (every ``Linear``, LayerNorm, GELU, dropout) runs on the flat rows;
    only attention needs the grid. With ``index`` set the rows hold the real tokens only
    ("unpadded": padding costs no matmul); with ``index`` None they are every position in
    order, and moving between the two layouts is a free ``view``.

    >>> layout = TokenLayout(batch=2, length=3, index=torch.tensor([0, 1, 2, 3]),
    ...                      first=torch.tensor([0, 3]))
    >>> rows = torch.arange(4.0)[:, None]          # 4 real tokens, 1 feature
    >>> layout.to_grid(rows)[..., 0]                # padding is zero in the grid
    tensor([[0., 1., 2.],
            [3., 0., 0.]])
    >>> layout.first_rows(rows)[:, 0]
    tensor([0., 3.])
    """

    batch: int
    length: int
    index: torch.Tensor | None = None  # grid positions (b * length + i) of the rows
    first: torch.Tensor | None = None  # row of each sequence's first token (with index)

    def to_grid(self, rows: torch.Tensor) -> torch.Tensor:
        """``(tokens, C)`` rows -> ``(batch, length, C)``, zeros where nothing was kept."""
        if self.index is None:
            return rows.view(self.batch, self.length, -1)
        grid = rows.new_zeros(self.batch * self.length, rows.shape[-1])
        return grid.index_copy(0, self.index, rows).view(self.batch, self.length, -1)

    def from_grid(self, grid: torch.Tensor) -> torch.Tensor:
        """``(batch, length, C)`` -> the ``(tokens, C)`` rows this layout keeps."""
        flat = grid.reshape(self.batch * self.length, -1)
        return flat if self.index is None else flat.index_select(0, self.index)

    def first_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The ``(batch, C)`` rows of each sequence's first (``[CLS]``) token."""
        if self.index is None:
            return rows.view(self.batch, self.length, -1)[:, 0]
        return rows.index_select(0, self.first)


class BertSelfAttention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention`` (explicit
    softmax only when the attention probabilities are asked for).

    Takes and returns flat ``(tokens, hidden)`` rows (see ``TokenLayout``); with
    ``first_only`` only each sequence's first token asks (queries), all tokens answer."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None,
        layout: TokenLayout,
        output_attentions: bool = False,
        first_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch = layout.batch

        def heads(x: torch.Tensor) -> torch.Tensor:  # (B, L, H*D) -> (B, H, L, D)
            return x.view(batch, x.shape[1], self.num_heads, -1).transpose(1, 2)

        queries = layout.first_rows(hidden_states) if first_only else hidden_states
        q = linear(self.query, queries)
        q = heads(q[:, None] if first_only else layout.to_grid(q))
        k = heads(layout.to_grid(linear(self.key, hidden_states)))
        v = heads(layout.to_grid(linear(self.value, hidden_states)))
        dropout_p = self.dropout_p if self.training else 0.0
        probs = None
        if output_attentions:
            scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            probs = scores.softmax(-1)
            context = F.dropout(probs, dropout_p, self.training) @ v
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        context = context.transpose(1, 2).flatten(2)  # (B, L or 1, H*D)
        return (context[:, 0] if first_only else layout.from_grid(context)), probs


class BertResidualOutput(nn.Module):
    """Dense, dropout, then LayerNorm of the residual sum: HF's ``BertSelfOutput`` and
    ``BertOutput`` (same parameter names: ``dense``, ``LayerNorm``)."""

    def __init__(self, in_features: int, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(linear(self.dense, hidden_states)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertResidualOutput(config.hidden_size, config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None,
        layout: TokenLayout,
        output_attentions: bool = False,
        first_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        context, probs = self.self(hidden_states, mask, layout, output_attentions, first_only)
        residual = layout.first_rows(hidden_states) if first_only else hidden_states
        return self.output(context, residual), probs


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACTIVATIONS[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(linear(self.dense, hidden_states))


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertResidualOutput(config.intermediate_size, config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None,
        layout: TokenLayout,
        output_attentions: bool = False,
        first_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, probs = self.attention(hidden_states, mask, layout, output_attentions, first_only)
        return self.output(self.intermediate(attended), attended), probs


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = config.gradient_checkpointing

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None,
        layout: TokenLayout,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        first_only: bool = False,
    ) -> tuple[torch.Tensor, tuple | None, tuple | None]:
        """Flat ``(tokens, hidden)`` rows in and out; ``first_only``: the last layer runs
        for each sequence's first token only (all a pooled classifier reads), and the
        result is ``(batch, hidden)``. Hidden states asked for come back on the grid."""
        all_hidden = (layout.to_grid(hidden_states),) if output_hidden_states else None
        all_attentions: tuple | None = () if output_attentions else None
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        last = len(self.layer) - 1
        for i, layer in enumerate(self.layer):
            args = (hidden_states, mask, layout, output_attentions, first_only and i == last)
            if recompute:
                # Keep only each layer's input; recompute its inside during backward.
                hidden_states, probs = checkpoint(layer, *args, use_reentrant=False)
            else:
                hidden_states, probs = layer(*args)
            if all_hidden is not None:
                all_hidden += (layout.to_grid(hidden_states),)
            if all_attentions is not None:
                all_attentions += (probs,)
        return hidden_states, all_hidden, all_attentions


class BertPooler(nn.Module):
    """tanh(dense(hidden state of the first token)), the ``[CLS]`` summary."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.tanh(linear(self.dense, hidden_states[:, 0]))


# -- shared base: init, loading, saving ---------------------------------------------------

M = TypeVar("M", bound="BertPreTrainedModel")


class BertPreTrainedModel(nn.Module):
    """Weight init, ``from_pretrained`` / ``save_pretrained`` and gradient checkpointing,
    shared by ``BertModel`` and the task models."""

    base_model_prefix: ClassVar[str] = "bert."  # where the encoder's keys live
    tied_keys: ClassVar[tuple[str, ...]] = ()  # keys that alias another (not saved)

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        if not isinstance(config, BertConfig):
            raise TypeError(
                f"{type(self).__name__} expects a BertConfig, got {type(config).__name__}; "
                "use BertConfig.from_dict(...) for a dict"
            )
        self.config = config

    def post_init(self) -> None:
        self.apply(self._init_weights)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Task models with a decoder share it with the word embeddings."""

    def _init_weights(self, module: nn.Module) -> None:
        # BERT's initialisation: N(0, initializer_range) weights, zero biases, unit norms.
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, BertLMPredictionHead):
            nn.init.zeros_(module.bias)

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each encoder layer in backward instead of keeping its activations."""
        self.config.gradient_checkpointing = True
        for module in self.modules():
            if isinstance(module, BertEncoder):
                module.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.config.gradient_checkpointing = False
        for module in self.modules():
            if isinstance(module, BertEncoder):
                module.gradient_checkpointing = False

    def pack_for_inference(self: M) -> M:
        """Pack the encoder's and pooler's ``Linear`` weights in MKL's GEMM layout for
        CPU inference; returns ``self``.

        Forward passes without autograd (``torch.no_grad()``, ``torch.inference_mode()``)
        then skip the repacking MKL does on every call: about 1.2x faster at batch 1, with
        the same outputs. The packed copy costs as much memory as those weights again.
        Training is unaffected: with autograd on, after ``train()`` (which drops the
        packs), or once a weight changes (optimizer step, ``load_state_dict``, ``.to()``),
        the layer computes as before; call this again when training is over. A write
        through ``weight.data`` is invisible to the check: call it again after one. Where
        the torch build has no MKL (ARM) or the weights are not fp32 on the CPU, nothing
        is packed and a warning says why.

        >>> import torch
        >>> model = BertModel(BertConfig.from_preset("bert-tiny")).eval()
        >>> ids = torch.randint(0, 30522, (1, 16))
        >>> with torch.no_grad():
        ...     before = model(ids).last_hidden_state
        ...     after = model.pack_for_inference()(ids).last_hidden_state
        >>> torch.allclose(before, after, atol=1e-5)
        True
        """
        if not mkl_packing_available():
            warnings.warn(
                "pack_for_inference(): this torch build has no MKL packed GEMM "
                f"(torch {torch.__version__}); the model runs unpacked",
                stacklevel=2,
            )
            return self
        layers = [
            module
            for owner in self.modules()
            if isinstance(owner, (BertEncoder, BertPooler))
            for module in owner.modules()
            if type(module) is nn.Linear  # not LoRA wrappers, quantized or parallel layers
        ]
        packed = sum(_pack(layer) for layer in layers)
        if layers and not packed:
            weight = layers[0].weight
            warnings.warn(
                "pack_for_inference(): nothing packed: MKL packs fp32 weights on the CPU, "
                f"these are {weight.dtype} on {weight.device}",
                stacklevel=2,
            )
        return self

    def train(self: M, mode: bool = True) -> M:
        if mode and _PACKED:  # training changes every weight: free the packed copies now
            for module in self.modules():
                _PACKED.pop(module, None)
        return super().train(mode)

    def quantize_dynamic_int8(self) -> nn.Module:
        """An int8 copy for CPU inference (``nn.Linear`` weights in int8, activations
        quantized per batch) through deepseek-quant; this model is left unchanged."""
        try:
            from deepseek.quantization import quantize_dynamic_int8
        except ImportError:
            raise ImportError(
                "dynamic int8 inference needs the deepseek-quant package: "
                "pip install 'deepseek-nlp[quant]'"
            ) from None
        return quantize_dynamic_int8(self)

    @classmethod
    def from_pretrained(
        cls: type[M],
        name_or_path: str | os.PathLike,
        *,
        random_init: bool = False,
        ignore_mismatched_sizes: bool = False,
        output_loading_info: bool = False,
        **overrides: Any,
    ) -> M:
        """Build this model from a Hugging Face-layout directory or a cached model name.

        ``name_or_path``: a directory (``config.json`` + ``model.safetensors`` or
        ``pytorch_model.bin``), or a name found under ``$DEEPSEEK_MODEL_HOME`` or in the
        local Hugging Face cache (nothing is downloaded). ``overrides`` replace config
        fields (``num_labels=3``, ``gradient_checkpointing=True``, ``hidden_dropout_prob``).
        ``random_init=True`` builds the architecture (from the directory's config, or the
        registry's preset for a known name) with fresh weights. Keys with or without the
        ``bert.`` prefix and legacy ``gamma``/``beta`` names load; new heads are reported
        as newly initialised and unused checkpoint heads as skipped.

        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> BertModel(BertConfig.from_preset("bert-tiny", num_hidden_layers=1)).save_pretrained(d)
        >>> model = BertForSequenceClassification.from_pretrained(d, num_labels=3)
        >>> model.config.num_labels, model.classifier.out_features
        (3, 3)
        """
        if random_init:
            config = _random_init_config(name_or_path, overrides)
            return cls(config)
        directory = hub.resolve_model_dir(
            name_or_path,
            needs=("config.json", hub.WEIGHT_FILES + hub.INDEX_FILES),
            what=f"{cls.__name__} checkpoint",
        )
        config = BertConfig.from_json_file(directory / "config.json", **overrides)
        model = cls(config)
        state, source = hub.load_weights_dir(directory)
        info = model.load_hf_state_dict(
            state, source=str(source), ignore_mismatched_sizes=ignore_mismatched_sizes
        )
        model.eval()
        return (model, info) if output_loading_info else model  # type: ignore[return-value]

    def load_hf_state_dict(
        self,
        state: Mapping[str, torch.Tensor],
        *,
        source: str = "state dict",
        ignore_mismatched_sizes: bool = False,
    ) -> dict[str, list[str]]:
        """Load a Hugging Face BERT state dict (any head, ``bert.`` prefix or not, legacy
        LayerNorm names), check every shape first, and log a short report. Returns the
        ``missing_keys`` / ``unexpected_keys`` / ``mismatched_keys`` lists."""
        expected = self.state_dict()
        converted = convert_hf_state_dict(state, expected.keys(), self.base_model_prefix)
        mismatched = [
            f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
            for k, v in converted.items()
            if k in expected and v.shape != expected[k].shape
        ]
        if mismatched and not ignore_mismatched_sizes:
            raise ValueError(
                f"the weights in {source} do not fit {type(self).__name__} built from its "
                "config: " + "; ".join(mismatched) + ". Check that config.json belongs to "
                "these weights (or pass ignore_mismatched_sizes=True to re-initialise "
                "mismatched heads, e.g. a classifier with another num_labels)"
            )
        mismatched_keys = [m.split(":")[0] for m in mismatched]
        for key in mismatched_keys:
            del converted[key]
        result = self.load_state_dict(converted, strict=False)
        self.tie_weights()
        tied = set(self.tied_keys) if self.config.tie_word_embeddings else set()
        missing = [k for k in result.missing_keys if k not in tied]
        unexpected = list(result.unexpected_keys)
        _report(type(self).__name__, source, missing, unexpected, mismatched_keys, self)
        return {
            "missing_keys": missing,
            "unexpected_keys": unexpected,
            "mismatched_keys": mismatched_keys,
        }

    def save_pretrained(self, directory: str | os.PathLike, *, safe_serialization: bool = True):
        """Write ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``) in the
        Hugging Face layout, each file atomically; tied decoder weights are stored once."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tied = set(self.tied_keys) if self.config.tie_word_embeddings else set()
        state = {k: v for k, v in self.state_dict().items() if k not in tied}
        if safe_serialization:
            hub.atomic_save_safetensors(state, directory / "model.safetensors")
        else:
            import io

            buffer = io.BytesIO()
            torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, buffer)
            hub.atomic_write_bytes(directory / "pytorch_model.bin", buffer.getvalue())
        hub.atomic_write_json(
            directory / "config.json", self.config.to_hf_dict(type(self).__name__)
        )

    # Shared forward parts -----------------------------------------------------------------
    def _label_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, num_labels: int
    ) -> torch.Tensor:
        """transformers' rule: regression for 1 label, single-label for integer labels,
        multi-label (BCE) for float labels, unless ``config.problem_type`` says."""
        problem = self.config.problem_type
        if problem is None:
            if num_labels == 1:
                problem = "regression"
            elif labels.dtype in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
                problem = "single_label_classification"
            else:
                problem = "multi_label_classification"
        if problem == "regression":
            if num_labels == 1:
                return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
            return F.mse_loss(logits, labels.to(logits.dtype))
        if problem == "single_label_classification":
            _check_index_range(
                "labels",
                labels,
                num_labels,
                f"the model has num_labels={num_labels} (labels must be 0..{num_labels - 1}, "
                "or -100 to ignore a position); rebuild it with the right num_labels",
                ignore=-100,
            )
            return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
        if labels.shape != logits.shape:
            raise ValueError(
                f"multi-label labels must have the logits' shape {tuple(logits.shape)} "
                f"(one 0/1 column per label), got {tuple(labels.shape)}"
            )
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def _random_init_config(name_or_path: str | os.PathLike, overrides: dict[str, Any]) -> BertConfig:
    path = Path(os.fspath(name_or_path)).expanduser()
    if (path / "config.json").is_file():
        return BertConfig.from_json_file(path / "config.json", **overrides)
    preset = preset_name(os.fspath(name_or_path))
    if preset is None:
        try:  # a cached model's config.json is enough for random weights
            return BertConfig.from_pretrained(name_or_path, **overrides)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"random_init=True needs a known architecture: {os.fspath(name_or_path)!r} is "
                f"neither a registered preset ({', '.join(sorted(PRESETS))}) nor a directory "
                "or cached model with a config.json"
            ) from None
    return BertConfig.from_preset(preset, **overrides)


def convert_hf_state_dict(
    state: Mapping[str, torch.Tensor], expected: Any, prefix: str
) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face BERT state dict's keys to this model's: legacy LayerNorm
    ``gamma``/``beta`` -> ``weight``/``bias``; add or strip the ``bert.`` prefix; drop the
    ``position_ids`` buffer that old checkpoints carry."""
    expected = set(expected)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(".gamma"):
            key = key[: -len(".gamma")] + ".weight"
        elif key.endswith(".beta"):
            key = key[: -len(".beta")] + ".bias"
        if key.endswith("embeddings.position_ids"):
            continue  # a buffer in old transformers versions, not a weight
        if prefix and not key.startswith(prefix) and prefix + key in expected:
            key = prefix + key
        elif not prefix and key.startswith("bert.") and key[len("bert.") :] in expected:
            key = key[len("bert.") :]
        out[key] = value
    return out


def _group(keys: list[str]) -> str:
    """``cls.predictions.* (5)``-style summary of a key list."""
    groups: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        head = ".".join(parts[:2]) if len(parts) > 2 else key
        groups[head] = groups.get(head, 0) + 1
    return ", ".join(f"{g}.* ({n})" if n > 1 else g for g, n in groups.items())


def _report(
    name: str,
    source: str,
    missing: list[str],
    unexpected: list[str],
    mismatched: list[str],
    model: BertPreTrainedModel,
) -> None:
    if not (missing or unexpected or mismatched):
        logger.info("%s: all weights loaded from %s", name, source)
        return
    prefix = model.base_model_prefix
    encoder_keys = [k for k in missing if k.startswith(prefix) and "pooler." not in k]
    head_keys = [k for k in missing if k not in encoder_keys]
    lines = [f"{name} loaded from {source}"]
    if head_keys:
        lines.append(
            f"newly initialised (expected for a new task head; train before use): "
            f"{_group(head_keys)}"
        )
    if encoder_keys:
        lines.append(
            f"WARNING: encoder weights missing from the checkpoint, left random: "
            f"{_group(encoder_keys)}"
        )
    if mismatched:
        lines.append(f"re-initialised, shape differed (ignore_mismatched_sizes): {mismatched}")
    if unexpected:
        lines.append(f"unused checkpoint weights (other heads), skipped: {_group(unexpected)}")
    logger.warning("; ".join(lines))


# -- models -------------------------------------------------------------------------------


class BertModel(BertPreTrainedModel):
    """The BERT encoder with (optional) pooler; ``state_dict()`` keys are Hugging Face's.

    ``forward(input_ids, attention_mask=None, token_type_ids=None)`` takes ``(batch,
    length)`` integer tensors (``attention_mask``: 1 = attend, 0 = padding) and returns a
    ``BertModelOutput`` (``last_hidden_state``, ``pooler_output``, optional
    ``hidden_states`` / ``attentions``) that also unpacks as ``(last_hidden_state,
    pooled)``.

    Padding: the rows of ``last_hidden_state`` (and of ``hidden_states``) at padding
    positions are unspecified, as in transformers, where they are computed but attend to
    nothing useful; read only the real tokens. On the CPU, eagerly, a padded batch runs
    "unpadded" (``self.unpad``, on by default): every ``Linear``, LayerNorm and GELU sees
    the real tokens only and attention alone sees the padded grid, so padding costs no
    matmul, and padding rows come back as zeros. ``first_token_only=True`` runs the last
    layer for the ``[CLS]`` token only (what the pooler reads; the classifier's fast path):
    ``last_hidden_state`` is then ``(batch, 1, hidden)``. It is ignored when hidden
    states or attentions are asked for.

    >>> import torch
    >>> model = BertModel(BertConfig.from_preset("bert-tiny")).eval()
    >>> ids = torch.tensor([[101, 2769, 102, 0]])
    >>> hidden, pooled = model(ids, attention_mask=torch.tensor([[1, 1, 1, 0]]))
    >>> tuple(hidden.shape)
    (1, 4, 128)
    """

    base_model_prefix = ""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        # CPU fast path for padded batches (see forward); False computes padding like HF.
        self.unpad = True
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        first_token_only: bool = False,
    ) -> BertModelOutput:
        config = self.config
        _check_int_tensor("input_ids", input_ids, None)
        if input_ids.shape[1] > config.max_position_embeddings:
            raise ValueError(
                f"input_ids has length {input_ids.shape[1]}, longer than "
                f"max_position_embeddings={config.max_position_embeddings}; truncate the "
                "texts (tokenizer(..., truncation=True, max_length=...))"
            )
        _check_index_range(
            "input_ids",
            input_ids,
            config.vocab_size,
            f"the model's vocab_size is {config.vocab_size}: check that the tokenizer's "
            "vocab.txt belongs to this model",
        )
        if token_type_ids is not None:
            _check_int_tensor("token_type_ids", token_type_ids, input_ids)
            _check_index_range(
                "token_type_ids",
                token_type_ids,
                config.type_vocab_size,
                f"the model has type_vocab_size={config.type_vocab_size}",
            )
        if position_ids is not None:
            _check_int_tensor("position_ids", position_ids, None)

        first_only = first_token_only and not (output_hidden_states or output_attentions)
        batch, length = input_ids.shape
        keep = self._keep_mask(attention_mask, input_ids)
        layout, mask = TokenLayout(batch, length), None
        # Whether any token is padding is free to ask on the CPU, where the data already is
        # (on accelerators it would be a host sync, and under torch.compile a graph break:
        # there the collator leaves the mask out when nothing is padded, and padding is
        # computed like every other token).
        on_host = keep is not None and keep.device.type == "cpu"
        if on_host and not torch.compiler.is_compiling():
            if bool(keep.all()):
                keep = None  # no padding: no mask, so SDPA takes its fastest kernel
            elif self.unpad and bool(keep[:, 0].all()):
                # Padding costs no matmul: token-wise layers see the real tokens only.
                lengths = keep.sum(1)
                layout.index = keep.flatten().nonzero().squeeze(1)
                layout.first = lengths.cumsum(0) - lengths
        if keep is not None:
            mask = keep[:, None, None, :]

        embedded = self.embeddings(input_ids, token_type_ids, position_ids)
        rows, all_hidden, all_attentions = self.encoder(
            layout.from_grid(embedded),
            mask,
            layout,
            output_hidden_states,
            output_attentions,
            first_only,
        )
        last = rows[:, None] if first_only else layout.to_grid(rows)
        pooled = self.pooler(last) if self.pooler is not None else None
        return BertModelOutput(last, pooled, all_hidden, all_attentions)

    @staticmethod
    def _keep_mask(
        attention_mask: torch.Tensor | None, input_ids: torch.Tensor
    ) -> torch.Tensor | None:
        """``attention_mask`` as booleans (True = attend), checked against ``input_ids``."""
        if attention_mask is None:
            return None
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask must be a tensor of shape {tuple(input_ids.shape)} "
                "(1 = attend, 0 = padding), got "
                f"{getattr(attention_mask, 'shape', type(attention_mask).__name__)}"
            )
        return attention_mask.to(torch.bool)

    @staticmethod
    def _attention_mask(
        attention_mask: torch.Tensor | None, input_ids: torch.Tensor
    ) -> torch.Tensor | None:
        """(batch, 1, 1, length) boolean mask for SDPA (True = attend), or None when there
        is no padding (checked on the CPU only, where it is free)."""
        keep = BertModel._keep_mask(attention_mask, input_ids)
        if keep is None:
            return None
        if keep.device.type == "cpu" and not torch.compiler.is_compiling() and keep.all():
            return None
        return keep[:, None, None, :]


class BertForSequenceClassification(BertPreTrainedModel):
    """BERT + dropout + a linear classifier on the pooled ``[CLS]`` state.

    ``labels`` give ``loss``: cross-entropy for integer labels, MSE when ``num_labels ==
    1``, BCE for float multi-hot labels (or as ``config.problem_type`` says).

    >>> import torch
    >>> model = BertForSequenceClassification.from_pretrained(
    ...     "bert-tiny", random_init=True, num_labels=3).eval()
    >>> out = model(torch.tensor([[101, 7, 102]]), labels=torch.tensor([2]))
    >>> tuple(out.logits.shape), out.loss.shape
    ((1, 3), torch.Size([]))
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config)
        dropout = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> SequenceClassifierOutput:
        out = self.bert(
            input_ids,
            attention_mask,
            token_type_ids,
            position_ids,
            output_hidden_states,
            output_attentions,
            first_token_only=True,  # the classifier reads the pooled [CLS] state only
        )
        logits = self.classifier(self.dropout(out.pooler_output))
        loss = None if labels is None else self._label_loss(logits, labels, self.num_labels)
        return SequenceClassifierOutput(loss, logits, out.hidden_states, out.attentions)


class BertForTokenClassification(BertPreTrainedModel):
    """BERT + dropout + a linear classifier on every token (NER, tagging); label
    ``-100`` marks positions without a label (padding, word-piece continuations)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> TokenClassifierOutput:
        out = self.bert(
            input_ids,
            attention_mask,
            token_type_ids,
            position_ids,
            output_hidden_states,
            output_attentions,
        )
        logits = self.classifier(self.dropout(out.last_hidden_state))
        loss = None
        if labels is not None:
            _check_index_range(
                "labels",
                labels,
                self.num_labels,
                f"the model has num_labels={self.num_labels} (use -100 for ignored tokens)",
                ignore=-100,
            )
            loss = F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return TokenClassifierOutput(loss, logits, out.hidden_states, out.attentions)


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACTIVATIONS[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class BertLMPredictionHead(nn.Module):
    """Transform, then the decoder: its weight is the word embedding matrix (tied by the
    task model) and its bias is ``bias`` (one parameter under both names)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden_states))


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


class _TiedDecoderMixin:
    tied_keys = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")

    def tie_weights(self) -> None:
        head = self.cls.predictions  # type: ignore[attr-defined]
        head.decoder.bias = head.bias
        if self.config.tie_word_embeddings:  # type: ignore[attr-defined]
            head.decoder.weight = self.bert.embeddings.word_embeddings.weight  # type: ignore[attr-defined]


class BertForMaskedLM(_TiedDecoderMixin, BertPreTrainedModel):
    """BERT + the masked-language-model head (decoder tied to the word embeddings);
    ``labels`` (``-100`` = not masked) give the MLM loss."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> MaskedLMOutput:
        out = self.bert(
            input_ids,
            attention_mask,
            token_type_ids,
            position_ids,
            output_hidden_states,
            output_attentions,
        )
        logits = self.cls.predictions(out.last_hidden_state)
        loss = None
        if labels is not None:
            _check_index_range(
                "labels", labels, self.config.vocab_size, "MLM labels are token ids", ignore=-100
            )
            loss = F.cross_entropy(logits.view(-1, self.config.vocab_size), labels.view(-1))
        return MaskedLMOutput(loss, logits, out.hidden_states, out.attentions)


class BertForPreTraining(_TiedDecoderMixin, BertPreTrainedModel):
    """BERT + both pretraining heads (masked LM and next-sentence prediction): loads the
    original pretraining checkpoints with no unused keys."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        next_sentence_label: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BertForPreTrainingOutput:
        out = self.bert(
            input_ids,
            attention_mask,
            token_type_ids,
            position_ids,
            output_hidden_states,
            output_attentions,
        )
        prediction = self.cls.predictions(out.last_hidden_state)
        relationship = self.cls.seq_relationship(out.pooler_output)
        loss = None
        if labels is not None and next_sentence_label is not None:
            loss = F.cross_entropy(
                prediction.view(-1, self.config.vocab_size), labels.view(-1)
            ) + F.cross_entropy(relationship.view(-1, 2), next_sentence_label.view(-1))
        return BertForPreTrainingOutput(
            loss, prediction, relationship, out.hidden_states, out.attentions
        )


# -- registry factories -------------------------------------------------------------------


def bert_base_chinese(**overrides: Any) -> BertModel:
    """BERT-base with the Chinese vocabulary; ``overrides`` replace config fields."""
    return BertModel(BertConfig.from_preset("bert-base-chinese", **overrides))


def bert_base_uncased(**overrides: Any) -> BertModel:
    """BERT-base with the English uncased vocabulary; ``overrides`` replace config fields."""
    return BertModel(BertConfig.from_preset("bert-base-uncased", **overrides))


def bert_large_uncased(**overrides: Any) -> BertModel:
    """BERT-large (24 layers, hidden 1024), English uncased vocabulary."""
    return BertModel(BertConfig.from_preset("bert-large-uncased", **overrides))


def bert_tiny(**overrides: Any) -> BertModel:
    """2 layers, hidden 128, 2 heads; ``overrides`` replace config fields."""
    return BertModel(BertConfig.from_preset("bert-tiny", **overrides))


def bert_classifier(
    pretrained: str | os.PathLike | None = None,
    num_labels: int | None = None,
    *,
    preset: str = "bert-base-chinese",
    labels: list[str] | None = None,
    **overrides: Any,
) -> BertForSequenceClassification:
    """The registry's ``bert_classifier``: ``{name: bert_classifier, pretrained: DIR,
    num_labels: 3}`` in YAML. ``pretrained`` is a directory or cached name; without it the
    ``preset`` architecture gets random weights. ``labels`` names the classes (saved as
    ``id2label``); ``overrides`` replace config fields (``gradient_checkpointing: true``).
    """
    if labels is not None:
        if num_labels is not None and num_labels != len(labels):
            raise ValueError(f"num_labels={num_labels} but {len(labels)} labels: {labels}")
        overrides["id2label"] = dict(enumerate(labels))
    elif num_labels is not None:
        overrides["num_labels"] = num_labels
    if pretrained is None:
        return BertForSequenceClassification.from_pretrained(preset, random_init=True, **overrides)
    return BertForSequenceClassification.from_pretrained(pretrained, **overrides)
