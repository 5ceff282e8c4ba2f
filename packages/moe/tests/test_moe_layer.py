"""deepseek-moe: MoE layer against a naive per-token reference, routing, aux loss, plugin."""

from __future__ import annotations

import pytest
import torch

from deepseek.moe import MoEClassifier, MoELayer, load_balancing_loss
from deepseek.plugins import registry


def make_layer(**kwargs) -> MoELayer:
    torch.manual_seed(0)
    options = {"d_model": 8, "d_hidden": 16, "num_experts": 4, "top_k": 2, **kwargs}
    return MoELayer(**options)


def naive_moe(layer: MoELayer, x: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """One token at a time: softmax router, top-k, weighted sum of expert outputs, with
    each expert's capacity enforced by counting its queue (first choices first)."""
    tokens = x.reshape(-1, layer.d_model)
    capacity = layer.capacity(tokens.shape[0])
    choices = []
    for token in tokens:
        probs = torch.softmax(token @ layer.router.gate.weight.T, dim=-1)
        weights, experts = probs.topk(layer.top_k)
        if normalize:
            weights = weights / weights.sum()
        choices.append((weights, experts))
    served = [0] * layer.num_experts
    out = torch.zeros_like(tokens)
    for slot in range(layer.top_k):
        for t, (weights, experts) in enumerate(choices):
            e = int(experts[slot])
            if capacity is not None and served[e] >= capacity:
                continue
            served[e] += 1
            out[t] += weights[slot] * layer.experts[e](tokens[t])
    return out.reshape(x.shape)


@pytest.mark.parametrize(
    "options",
    [
        {"top_k": 2},
        {"top_k": 1},
        {"top_k": 3, "normalize_weights": True},
        {"top_k": 2, "capacity_factor": 0.5},
        {"top_k": 1, "capacity_factor": 1.0},
    ],
    ids=str,
)
def test_output_matches_naive_per_token_loop(options):
    layer = make_layer(**options)
    x = torch.randn(3, 7, 8)
    with torch.no_grad():
        expected = naive_moe(layer, x, normalize=options.get("normalize_weights", False))
        torch.testing.assert_close(layer(x), expected)


def test_capacity_drops_overflow_tokens():
    layer = make_layer(top_k=1, capacity_factor=0.25)  # capacity ceil(0.25*32/4) = 2 per expert
    x = torch.randn(32, 8)
    with torch.no_grad():
        y = layer(x)
    assert layer.capacity(32) == 2
    served = (y.abs().sum(dim=-1) > 0).sum().item()
    assert served <= 2 * layer.num_experts
    assert served < 32


def test_top1_sends_each_token_to_exactly_its_argmax_expert():
    layer = make_layer(top_k=1, num_experts=5)
    x = torch.randn(40, 8)
    seen: dict[int, torch.Tensor] = {}
    for index, expert in enumerate(layer.experts):
        expert.register_forward_hook(
            lambda module, inputs, output, index=index: seen.__setitem__(index, inputs[0])
        )
    with torch.no_grad():
        layer(x)
        argmax = (x @ layer.router.gate.weight.T).argmax(dim=-1)
    assert sum(rows.shape[0] for rows in seen.values()) == x.shape[0]
    for index in range(layer.num_experts):
        mine = x[argmax == index]
        got = seen.get(index, torch.empty(0, 8))
        # Each expert receives exactly its tokens (dispatch order is token order).
        torch.testing.assert_close(got, mine)


def test_aux_loss_is_one_for_uniform_routing():
    # Token j is the basis vector e_j and the router scores it with 5 * I: every expert gets
    # the same number of tokens and the same mean probability.
    layer = make_layer(d_model=4, num_experts=4, top_k=1)
    with torch.no_grad():
        layer.router.gate.weight.copy_(5.0 * torch.eye(4))
        layer(torch.eye(4).repeat(3, 1))
    torch.testing.assert_close(layer.aux_loss, torch.tensor(1.0))
    # A router that scores all experts equally is balanced in probability: also exactly 1.
    with torch.no_grad():
        layer.router.gate.weight.zero_()
        layer(torch.randn(10, 4))
    torch.testing.assert_close(layer.aux_loss, torch.tensor(1.0))


def test_aux_loss_grows_when_routing_collapses():
    layer = make_layer(num_experts=4, top_k=1)
    with torch.no_grad():
        layer.router.gate.weight.zero_()
        layer.router.gate.weight[2] = 10.0  # positive inputs all score expert 2 highest
        x = torch.rand(16, 8) + 0.5
        layer(x)
    probs = torch.softmax(x @ layer.router.gate.weight.T, dim=-1)
    assert layer.aux_loss.item() > 1.0
    # f = (0, 0, 1, 0), so the loss is E * mean probability of expert 2, close to E.
    torch.testing.assert_close(layer.aux_loss, 4 * probs[:, 2].mean())
    assert layer.aux_loss.item() > 3.9


def test_load_balancing_loss_counts_every_slot():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    experts = torch.tensor([[0, 1], [1, 2]])  # f = (1/4, 2/4, 1/4), P = (0.4, 0.4, 0.2)
    expected = 3 * (0.25 * 0.4 + 0.5 * 0.4 + 0.25 * 0.2)
    assert load_balancing_loss(probs, experts).item() == pytest.approx(expected)


@pytest.mark.parametrize("top_k", [1, 2])
def test_gradients_reach_router_and_experts(top_k):
    layer = make_layer(top_k=top_k)
    y = layer(torch.randn(64, 8))
    (y.pow(2).mean() + 0.01 * layer.aux_loss).backward()
    assert layer.router.gate.weight.grad is not None
    assert layer.router.gate.weight.grad.abs().sum() > 0
    for expert in layer.experts:  # 64 random tokens reach all 4 experts
        for p in expert.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0


def test_aux_loss_alone_trains_the_router():
    layer = make_layer(top_k=1)
    layer(torch.randn(16, 8))
    layer.aux_loss.backward()
    assert layer.router.gate.weight.grad.abs().sum() > 0


def test_bad_arguments_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="top_k"):
        MoELayer(8, 16, num_experts=2, top_k=3)
    with pytest.raises(ValueError, match="num_experts"):
        MoELayer(8, 16, num_experts=0)
    with pytest.raises(ValueError, match="capacity_factor"):
        MoELayer(8, 16, num_experts=2, capacity_factor=0)
    layer = make_layer()
    with pytest.raises(ValueError, match=r"d_model=8"):
        layer(torch.randn(3, 5))
    with pytest.raises(TypeError, match="floating"):
        layer(torch.ones(3, 8, dtype=torch.long))


def test_moe_classifier_learns_a_fixed_batch():
    torch.manual_seed(0)
    model = MoEClassifier(in_features=12, num_classes=3, d_model=16, d_hidden=32)
    x, labels = torch.randn(48, 12), torch.randint(0, 3, (48,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        losses.append(loss.item())
        optimizer.zero_grad()
        (loss + 0.01 * model.aux_loss).backward()
        optimizer.step()
    assert losses[-1] < 0.5 * losses[0]


def test_plugin_is_discovered_through_its_entry_point():
    models = registry("model")
    assert "moe-mlp" in models.names()
    assert models.provider("moe-mlp").distribution == "deepseek-moe"
    model = models.create("moe-mlp", in_features=20, num_classes=3, num_experts=2, top_k=1)
    assert isinstance(model, MoEClassifier)
    assert model(torch.randn(4, 20)).shape == (4, 3)
    assert model.aux_loss is not None


def test_layer_copies_after_a_forward_without_its_graph():
    import copy

    layer = MoELayer(d_model=8, d_hidden=16, num_experts=4, top_k=2)
    layer(torch.randn(5, 8)).sum().backward()
    assert layer.aux_loss is not None
    clone = copy.deepcopy(layer)  # the stored aux_loss is a non-leaf graph tensor
    assert clone.aux_loss is None
    x = torch.randn(3, 8)
    torch.testing.assert_close(clone(x), layer(x))
