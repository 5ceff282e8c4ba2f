"""``MoETransformerLM``: a small decoder-only DeepSeekMoE language model, in one file.

Pre-norm blocks (``RMSNorm``), rotary position embeddings, causal attention with
``scaled_dot_product_attention``, the first ``n_dense_layers`` blocks with a dense SwiGLU
feed-forward and the rest with :class:`~deepseek.moe.layer.MoELayer` (shared + routed
experts), optionally tied input/output embeddings. ``generate()`` decodes greedily or by
sampling (temperature, top-k, top-p) with a KV cache.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepseek.moe.experts import FeedForward
from deepseek.moe.layer import MoELayer


@dataclasses.dataclass
class MoETransformerConfig:
    """Every option of :class:`MoETransformerLM` (the YAML ``model:`` keys)."""

    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    max_seq_len: int = 256
    n_dense_layers: int = 1
    dense_d_hidden: int = 384
    num_experts: int = 8
    top_k: int = 2
    num_shared_experts: int = 1
    moe_d_hidden: int = 96
    score_func: str = "softmax"
    normalize_weights: bool = False
    routed_scaling_factor: float = 1.0
    n_groups: int = 1
    topk_groups: int | None = None
    capacity_factor: float | None = None
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    dropout: float = 0.0
    tie_embeddings: bool = True
    activation_checkpointing: bool = False
    aux_loss_coef: float = 0.01
    device_aux_loss_coef: float = 0.0
    z_loss_coef: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"the head size d_model / n_heads = {self.d_model // self.n_heads} must be "
                "even for rotary embeddings"
            )
        if not 0 <= self.n_dense_layers <= self.n_layers:
            raise ValueError(
                f"n_dense_layers must be in [0, n_layers={self.n_layers}], "
                f"got {self.n_dense_layers}"
            )


class KVCache:
    """Keys and values of every layer for up to ``max_len`` positions.

    ``length`` is the number of positions already stored (the next token's position).
    """

    def __init__(
        self,
        n_layers: int,
        batch: int,
        n_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (n_layers, batch, n_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        self.keys[layer, :, :, self.length : end] = k
        self.values[layer, :, :, self.length : end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


def rotary_tables(head_dim: int, max_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x: (batch, heads, seq, head_dim)`` by position (rotate-half convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    """Multi-head causal self-attention. Head counts come from the projections' sizes, so
    the module also runs with tensor-parallel (column-sharded) ``wq``/``wk``/``wv``."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.head_dim = d_model // n_heads
        self.wq = nn.Linear(d_model, d_model, bias=False)
        self.wk = nn.Linear(d_model, d_model, bias=False)
        self.wv = nn.Linear(d_model, d_model, bias=False)
        self.wo = nn.Linear(d_model, d_model, bias=False)
        self.dropout = dropout

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None = None,
        layer_index: int = 0,
    ) -> torch.Tensor:
        batch, seq, _ = x.shape
        shape = (batch, seq, -1, self.head_dim)
        q = self.wq(x).view(shape).transpose(1, 2)
        k = self.wk(x).view(shape).transpose(1, 2)
        v = self.wv(x).view(shape).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.update(layer_index, k, v)
        dropout = self.dropout if self.training else 0.0
        if past == 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        elif seq == 1:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        else:  # a chunk after cached positions: query i sees keys up to past + i
            mask = torch.ones(seq, past + seq, dtype=torch.bool, device=x.device).tril(past)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.wo(out.transpose(1, 2).reshape(batch, seq, -1))


class Block(nn.Module):
    def __init__(self, config: MoETransformerConfig, moe: bool) -> None:
        super().__init__()
        c = config
        self.attn_norm = nn.RMSNorm(c.d_model, eps=c.norm_eps)
        self.attn = Attention(c.d_model, c.n_heads, c.dropout)
        self.ffn_norm = nn.RMSNorm(c.d_model, eps=c.norm_eps)
        self.ffn: nn.Module
        if moe:
            self.ffn = MoELayer(
                c.d_model,
                c.moe_d_hidden,
                c.num_experts,
                c.top_k,
                c.capacity_factor,
                c.normalize_weights,
                num_shared_experts=c.num_shared_experts,
                activation="swiglu",
                score_func=c.score_func,
                routed_scaling_factor=c.routed_scaling_factor,
                n_groups=c.n_groups,
                topk_groups=c.topk_groups,
            )
        else:
            self.ffn = FeedForward(c.d_model, c.dense_d_hidden, "swiglu")
        self.dropout = nn.Dropout(c.dropout)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None = None,
        layer_index: int = 0,
    ) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), cos, sin, cache, layer_index))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class MoETransformerLM(nn.Module):
    """A decoder-only DeepSeekMoE language model (registered as ``moe-lm``).

    Build it from a :class:`MoETransformerConfig` or keyword options. ``forward(ids)``
    returns logits ``(batch, seq, vocab)``; the Trainer uses ``training_step`` (next-token
    cross-entropy plus the MoE balancing losses weighted by ``aux_loss_coefs``) and
    ``validation_step`` (cross-entropy alone). Batches are token windows ``(batch, seq+1)``
    (or a 1-tuple holding one).

    ``tp_plan`` maps module-name patterns to ``"colwise"`` / ``"rowwise"`` for
    deepseek-dist's ``tp`` strategy (torch's ``ColwiseParallel`` / ``RowwiseParallel``).

    >>> import torch
    >>> model = MoETransformerLM(d_model=32, n_layers=2, n_heads=2, num_experts=4,
    ...                          moe_d_hidden=16, dense_d_hidden=64, max_seq_len=32)
    >>> model(torch.randint(0, 256, (2, 10))).shape
    torch.Size([2, 10, 256])
    >>> model.training_step(torch.randint(0, 256, (2, 11))).shape
    torch.Size([])
    >>> model.generate(torch.tensor([[104, 105]]), max_new_tokens=5).shape
    torch.Size([1, 7])
    """

    tp_plan: dict[str, str] = {
        "blocks.*.attn.wq": "colwise",
        "blocks.*.attn.wk": "colwise",
        "blocks.*.attn.wv": "colwise",
        "blocks.*.attn.wo": "rowwise",
        "blocks.*.ffn.w1": "colwise",
        "blocks.*.ffn.w3": "colwise",
        "blocks.*.ffn.w2": "rowwise",
        "blocks.*.ffn.shared_experts.w1": "colwise",
        "blocks.*.ffn.shared_experts.w3": "colwise",
        "blocks.*.ffn.shared_experts.w2": "rowwise",
    }

    def __init__(
        self, config: MoETransformerConfig | Mapping[str, Any] | None = None, **options: Any
    ):
        super().__init__()
        fields = {f.name for f in dataclasses.fields(MoETransformerConfig)}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise TypeError(
                f"MoETransformerLM got unknown option(s) {unknown}; options: {sorted(fields)}"
            )
        if config is None:
            config = MoETransformerConfig(**options)
        elif isinstance(config, Mapping):
            config = MoETransformerConfig(**{**config, **options})
        elif options:
            config = dataclasses.replace(config, **options)
        self.config = c = config
        self.aux_loss_coefs = {
            "aux_loss": c.aux_loss_coef,
            "device_aux_loss": c.device_aux_loss_coef,
            "z_loss": c.z_loss_coef,
        }
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        blocks: list[nn.Module] = [Block(c, moe=i >= c.n_dense_layers) for i in range(c.n_layers)]
        if c.activation_checkpointing:
            from deepseek.nn.activation_checkpointing import checkpoint_wrapper

            blocks = [checkpoint_wrapper(block) for block in blocks]
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.RMSNorm(c.d_model, eps=c.norm_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.apply(self._init_weights)
        if c.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rotary_tables(c.d_model // c.n_heads, c.max_seq_len, c.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    @property
    def hparams(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    # -- forward -----------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (
            torch.long,
            torch.int,
        ):
            raise TypeError("input_ids must be an integer tensor of shape (batch, seq)")
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        start = cache.length if cache is not None else 0
        end = start + input_ids.shape[1]
        if end > self.config.max_seq_len:
            raise ValueError(
                f"sequence of {end} positions exceeds max_seq_len={self.config.max_seq_len}"
            )
        x = self.embed(input_ids)
        cos, sin = self.rope_cos[start:end], self.rope_sin[start:end]
        for index, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, index)
        if cache is not None:
            cache.length = end
        return self.lm_head(self.norm(x))

    def _loss(self, batch: Any) -> torch.Tensor:
        ids = batch[0] if isinstance(batch, (list, tuple)) else batch
        logits = self(ids[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    def training_step(self, batch: Any) -> torch.Tensor:
        """Next-token cross-entropy plus the weighted MoE balancing losses."""
        from deepseek.moe.balancing import auxiliary_loss

        loss = self._loss(batch)
        coefs = {f"{k}_coef": v for k, v in self.aux_loss_coefs.items()}
        return loss + auxiliary_loss(self, **coefs).to(loss.dtype)

    def validation_step(self, batch: Any) -> dict[str, torch.Tensor]:
        return {"loss": self._loss(batch)}

    # -- generation --------------------------------------------------------------------
    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        c = self.config
        param = self.embed.weight
        return KVCache(
            c.n_layers,
            batch,
            c.n_heads,
            max_len or c.max_seq_len,
            c.d_model // c.n_heads,
            param.dtype,
            param.device,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor | Sequence[int],
        max_new_tokens: int = 64,
        *,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue ``input_ids`` ``(batch, seq)`` by ``max_new_tokens`` tokens.

        Greedy by default; ``do_sample=True`` samples from the softmax at ``temperature``,
        restricted to the ``top_k`` most likely tokens and/or the smallest set whose
        probability reaches ``top_p``. ``use_cache=False`` recomputes the whole sequence
        at every step (same tokens, slower).
        """
        ids = torch.as_tensor(input_ids, dtype=torch.long, device=self.embed.weight.device)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if ids.shape[1] == 0:
            raise ValueError("generate needs a prompt of at least one token")
        if ids.shape[1] + max_new_tokens > self.config.max_seq_len:
            raise ValueError(
                f"prompt ({ids.shape[1]}) + max_new_tokens ({max_new_tokens}) exceeds "
                f"max_seq_len={self.config.max_seq_len}"
            )
        if do_sample and not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        was_training = self.training
        self.eval()
        try:
            cache = self.new_cache(ids.shape[0]) if use_cache else None
            logits = self(ids, cache)[:, -1]
            for _ in range(max_new_tokens):
                token = self._next_token(logits, do_sample, temperature, top_k, top_p, generator)
                ids = torch.cat([ids, token], dim=1)
                logits = self(token, cache)[:, -1] if use_cache else self(ids)[:, -1]
            return ids
        finally:
            self.train(was_training)

    @staticmethod
    def _next_token(
        logits: torch.Tensor,
        do_sample: bool,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        if not do_sample:
            return logits.argmax(dim=-1, keepdim=True)
        logits = logits.float() / temperature
        if top_k is not None:
            kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p is not None:
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            cumulative = sorted_logits.softmax(-1).cumsum(-1)
            # Drop a token when the tokens before it already reach top_p.
            drop_sorted = cumulative - sorted_logits.softmax(-1) >= top_p
            drop = drop_sorted.scatter(1, order, drop_sorted)
            logits = logits.masked_fill(drop, float("-inf"))
        probs = logits.softmax(dim=-1)
        return torch.multinomial(probs, 1, generator=generator)
