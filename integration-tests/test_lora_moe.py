"""deepseek-lora (plugins/lora) on deepseek-moe's MoE language model: adapters on the
attention projections, trained by core's Trainer through the model's own
``training_step`` (next-token loss + balancing losses), then merged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepseek.moe")
try:
    import deepseek_lora
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "lora" / "src"))
deepseek_lora = pytest.importorskip("deepseek_lora")

import deepseek as ds  # noqa: E402
from deepseek.moe import MoETransformerConfig, MoETransformerLM  # noqa: E402

Lora, LoraError, LoraLinear, merge = (
    deepseek_lora.Lora,
    deepseek_lora.LoraError,
    deepseek_lora.LoraLinear,
    deepseek_lora.merge,
)


def tiny_lm() -> MoETransformerLM:
    torch.manual_seed(0)
    config = MoETransformerConfig(
        vocab_size=64, d_model=32, n_layers=2, n_heads=4, max_seq_len=32, n_dense_layers=1,
        dense_d_hidden=64, num_experts=4, top_k=2, moe_d_hidden=16,
    )  # fmt: skip
    return MoETransformerLM(config)


def test_lora_on_the_moe_lm_attention_trains_only_adapters_and_merges(tmp_path):
    model = tiny_lm()
    ids = torch.randint(0, 64, (16, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = model.eval()(ids)
    model = Lora(rank=4, alpha=8, target_modules=["attn.wq", "attn.wv"]).apply(model)
    wrapped = sorted(n for n, m in model.named_modules() if isinstance(m, LoraLinear))
    assert wrapped == [f"blocks.{i}.attn.{w}" for i in (0, 1) for w in ("wq", "wv")]
    with torch.no_grad():
        assert torch.equal(model.eval()(ids), base)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = ds.Trainer(
        model, torch.optim.AdamW, optimizer_kwargs={"lr": 1e-2},
        train_data=torch.utils.data.TensorDataset(ids), batch_size=8, max_epochs=2,
        enable_progress_bar=False, default_root_dir=str(tmp_path), seed=0,
    )  # fmt: skip
    trainer.fit()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {n for n in before if ".lora_" in n}
    with torch.no_grad():
        adapted = model.eval()(ids)
        merged = merge(model)
        got = merged(ids)
    assert not any(isinstance(m, LoraLinear) for m in merged.modules())
    assert not torch.allclose(adapted, base)
    torch.testing.assert_close(got, adapted, atol=1e-5, rtol=1e-5)


def test_lora_refuses_the_grouped_experts_with_a_clear_error():
    with pytest.raises(LoraError, match=r"matches no Linear \('blocks.1.ffn.experts' is a Group"):
        Lora(target_modules=["*.experts"]).apply(tiny_lm())
