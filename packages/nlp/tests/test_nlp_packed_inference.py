"""``pack_for_inference()``: MKL-packed Linear weights for CPU inference give the numbers of
transformers and of the unpacked model, run the packed kernel only where it is valid (no
autograd, unchanged weights, no hooks, not compiled), and leave the model's state alone."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from deepseek.nlp import BertConfig, BertForSequenceClassification, BertModel
from deepseek.nlp.models.bert import mkl_packing_available

pytestmark = pytest.mark.skipif(
    not mkl_packing_available(), reason="this torch build has no MKL packed GEMM"
)

TINY = {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 64}  # fmt: skip
ATOL = 1e-5


def packed_calls(model, *args, **kwargs) -> int:
    """How many times the forward ran MKL's packed GEMM (read from torch's profiler)."""
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(*args, **kwargs)
    return sum(e.count for e in prof.key_averages() if e.key == "mkl::_mkl_linear")


def classifier(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(**TINY, num_labels=3)).eval()


def padded_batch():
    ids = torch.randint(1, TINY["vocab_size"], (3, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 10:] = 0
    return ids, mask


def test_packed_outputs_match_transformers_with_and_without_padding():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    theirs = transformers.BertForSequenceClassification(
        transformers.BertConfig(**TINY, num_labels=3)
    ).eval()
    ours = BertForSequenceClassification(BertConfig(**TINY, num_labels=3)).eval()
    ours.load_state_dict(theirs.state_dict(), strict=False)
    ours.pack_for_inference()
    ids, mask = padded_batch()
    for kwargs in ({"attention_mask": mask}, {}, {"input_ids": ids[:1]}):
        args = () if "input_ids" in kwargs else (ids,)
        with torch.no_grad():
            expected = theirs(*args, **kwargs, output_hidden_states=True)
            got = ours(*args, **kwargs, output_hidden_states=True)
        torch.testing.assert_close(got.logits, expected.logits, atol=ATOL, rtol=0)
        keep = kwargs.get("attention_mask", torch.ones(len(got.logits), 12)).bool()
        for mine, ref in zip(got.hidden_states, expected.hidden_states, strict=True):
            torch.testing.assert_close(mine[keep], ref[keep], atol=ATOL, rtol=0)
    # 2 layers x 6 linears + pooler, all through the packed kernel.
    assert packed_calls(ours, ids, attention_mask=mask) == 2 * 6 + 1


def test_a_changed_weight_is_never_read_from_a_stale_pack():
    model, reference = classifier(), classifier()
    ids, mask = padded_batch()
    model.pack_for_inference()
    layer = model.bert.encoder.layer[0].intermediate.dense
    with torch.no_grad():
        layer.weight.mul_(2.0)  # in place: bumps the version counter
        reference.bert.encoder.layer[0].intermediate.dense.weight.mul_(2.0)
        torch.testing.assert_close(
            model(ids, attention_mask=mask).logits, reference(ids, attention_mask=mask).logits
        )
    assert packed_calls(model, ids, attention_mask=mask) == 2 * 6  # that one layer unpacked

    other = classifier(seed=1)
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, other(ids).logits)
    assert packed_calls(model, ids) == 0  # every weight was copied into: all stale


def test_training_drops_the_packs_and_autograd_never_uses_them():
    model = classifier().pack_for_inference()
    ids, mask = padded_batch()
    labels = torch.tensor([0, 1, 2])
    loss = model(ids, attention_mask=mask, labels=labels).loss  # autograd on: plain path
    loss.backward()
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad is not None
    assert packed_calls(model, ids) > 0
    model.train()
    model.eval()
    assert packed_calls(model, ids) == 0


def test_hooks_still_fire_and_compile_sees_the_plain_layers():
    model = classifier().pack_for_inference()
    ids, mask = padded_batch()
    seen = []
    query = model.bert.encoder.layer[1].attention.self.query
    handle = query.register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    assert packed_calls(model, ids, attention_mask=mask) == 2 * 6  # the hooked one unpacked
    assert seen
    handle.remove()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(
            compiled(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits
        )


def test_a_packed_model_keeps_its_state_dict_copies_and_pickles():
    model = classifier()
    keys = list(model.state_dict())
    model.pack_for_inference()
    assert list(model.state_dict()) == keys
    ids, _ = padded_batch()
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        with torch.no_grad():
            torch.testing.assert_close(clone(ids).logits, model(ids).logits)
        assert packed_calls(clone, ids) == 0  # a copy is unpacked until packed itself


def test_weights_mkl_cannot_pack_give_a_warning_and_the_same_model():
    model = BertModel(BertConfig(**TINY)).to(torch.bfloat16).eval()
    with pytest.warns(UserWarning, match="nothing packed.*torch.bfloat16 on cpu"):
        assert model.pack_for_inference() is model
    ids, _ = padded_batch()
    assert packed_calls(model, ids) == 0
