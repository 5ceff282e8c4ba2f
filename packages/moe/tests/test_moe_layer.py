"""deepseek-moe: the MoE layer against a naive per-expert-mask reference, balancing
statistics, old state dicts, bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from moe_reference import naive_moe, naive_route

from deepseek.moe import Expert, MoELayer, load_balancing_loss
from deepseek.moe.router import router_z_loss

ROUTER_OPTIONS = [
    {},
    {"top_k": 1},
    {"top_k": 3, "normalize_weights": True},
    {"score_func": "sigmoid", "normalize_weights": True, "routed_scaling_factor": 2.5},
    {"score_func": "sigmoid", "n_groups": 4, "topk_groups": 2, "num_experts": 8},
    {"n_groups": 2, "topk_groups": 1, "num_experts": 8, "top_k": 3, "normalize_weights": True},
    {"activation": "swiglu", "num_shared_experts": 2},
    {"activation": "gelu", "bias": False, "routed_scaling_factor": 0.5},
]
CAPACITIES = [None, 0.5, 1.0, 2.0]


def make_layer(**kwargs) -> MoELayer:
    torch.manual_seed(0)
    options = {"d_model": 8, "d_hidden": 16, "num_experts": 4, "top_k": 2, **kwargs}
    layer = MoELayer(**options)
    with torch.no_grad():  # a non-zero selection bias, so that its use is tested too
        layer.router.score_bias.normal_(0, 0.05)
    return layer


def grads_of(layer: MoELayer, x: torch.Tensor, forward) -> dict[str, torch.Tensor]:
    layer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    out = forward(x)
    out = out[0] if isinstance(out, tuple) else out
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    grads = {name: p.grad.clone() for name, p in layer.named_parameters() if p.grad is not None}
    grads["input"] = x.grad.clone()
    grads["output"] = out.detach()
    return grads


@pytest.mark.parametrize("capacity_factor", CAPACITIES, ids=lambda c: f"capacity={c}")
@pytest.mark.parametrize("options", ROUTER_OPTIONS, ids=str)
def test_outputs_and_gradients_equal_the_naive_reference(options, capacity_factor):
    layer = make_layer(capacity_factor=capacity_factor, **options)
    x = torch.randn(3, 7, 8)
    expected = grads_of(layer, x, lambda t: naive_moe(layer, t))
    got = grads_of(layer, x, layer)
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=name, atol=1e-5, rtol=1e-4)
    _, dropped = naive_moe(layer, x)
    assert int(layer.dropped_tokens) == dropped
    if capacity_factor == 0.5:
        assert dropped > 0  # the capacity case really drops something


@pytest.mark.parametrize(
    "experts_options",
    [{"use_grouped_mm": False}, {"group_alignment": 16}, {"group_alignment": 4}],
    ids=str,
)
def test_split_fallback_and_padded_groups_equal_the_reference(experts_options):
    layer = make_layer(activation="swiglu", num_experts=8, top_k=3)
    for name, value in experts_options.items():
        setattr(layer.experts, name, value)
    x = torch.randn(50, 8)
    expected = grads_of(layer, x, lambda t: naive_moe(layer, t))
    got = grads_of(layer, x, layer)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=name, atol=1e-5, rtol=1e-4)


def test_unaligned_sizes_use_the_fallback_and_stay_exact():
    layer = make_layer(d_model=6, d_hidden=10, activation="swiglu")  # rows not 16-byte multiples
    x = torch.randn(20, 6)
    expected = grads_of(layer, x, lambda t: naive_moe(layer, t))
    got = grads_of(layer, x, layer)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=name, atol=1e-5, rtol=1e-4)


def test_two_and_three_dimensional_inputs_agree():
    layer = make_layer(activation="swiglu", num_shared_experts=1)
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(layer(x).reshape(10, 8), layer(x.reshape(10, 8)))


def test_routing_statistics_after_the_call():
    layer = make_layer(num_experts=4, top_k=2, capacity_factor=0.5)
    x = torch.randn(40, 8)
    with torch.no_grad():
        layer(x)
        _, chosen = naive_route(layer, x)
    expected_load = torch.bincount(chosen.reshape(-1), minlength=4).float()
    torch.testing.assert_close(layer.expert_load, expected_load)
    assert layer.expert_load.sum() == 80
    torch.testing.assert_close(layer.load_ratio, expected_load.max() / expected_load.mean())
    assert int(layer.dropped_tokens) == naive_moe(layer, x)[1]
    logits = (x @ layer.router.gate.weight.T).float()
    torch.testing.assert_close(layer.z_loss, torch.logsumexp(logits, -1).square().mean())
    probs = logits.softmax(-1)
    fraction = expected_load / 80
    torch.testing.assert_close(layer.aux_loss, 4 * (fraction * probs.mean(0)).sum())


def test_aux_loss_is_one_for_uniform_routing():
    layer = make_layer(d_model=4, num_experts=4, top_k=1)
    with torch.no_grad():
        layer.router.score_bias.zero_()
        layer.router.gate.weight.copy_(5.0 * torch.eye(4))
        layer(torch.eye(4).repeat(3, 1))
    torch.testing.assert_close(layer.aux_loss, torch.tensor(1.0))
    torch.testing.assert_close(layer.load_ratio, torch.tensor(1.0))
    with torch.no_grad():
        layer.router.gate.weight.zero_()
        layer(torch.randn(10, 4))
    torch.testing.assert_close(layer.aux_loss, torch.tensor(1.0))


def test_aux_losses_grow_when_routing_collapses():
    layer = make_layer(num_experts=4, top_k=1, balance_devices=2)
    with torch.no_grad():
        layer.router.score_bias.zero_()
        layer.router.gate.weight.zero_()
        layer.router.gate.weight[2] = 10.0  # positive inputs all score expert 2 highest
        x = torch.rand(16, 8) + 0.5
        layer(x)
    probs = torch.softmax(x @ layer.router.gate.weight.T, dim=-1)
    torch.testing.assert_close(layer.aux_loss, 4 * probs[:, 2].mean())
    assert layer.aux_loss.item() > 3.9
    # Device level: experts {0,1} and {2,3}; all load on the second device.
    p = probs.mean(0)
    torch.testing.assert_close(layer.device_aux_loss, 2 * (p[2] + p[3]))
    assert layer.load_ratio.item() == pytest.approx(4.0)


def test_load_balancing_loss_counts_every_slot():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    experts = torch.tensor([[0, 1], [1, 2]])  # f = (1/4, 2/4, 1/4), P = (0.4, 0.4, 0.2)
    expected = 3 * (0.25 * 0.4 + 0.5 * 0.4 + 0.25 * 0.2)
    assert load_balancing_loss(probs, experts).item() == pytest.approx(expected)


def test_z_loss_and_aux_loss_train_the_router():
    layer = make_layer(top_k=1)
    layer(torch.randn(16, 8))
    (layer.aux_loss + layer.z_loss + layer.device_aux_loss).backward()
    assert layer.router.gate.weight.grad.abs().sum() > 0
    assert router_z_loss(torch.zeros(2, 4)).item() == pytest.approx(
        torch.log(torch.tensor(4.0)).item() ** 2
    )


def test_bias_changes_selection_but_not_the_gate_weights():
    layer = make_layer(num_experts=4, top_k=1, score_func="sigmoid")
    x = torch.randn(30, 8)
    with torch.no_grad():
        layer.router.score_bias.copy_(torch.tensor([0.0, 0.0, 10.0, 0.0]))
        route = layer.router(x)
    assert (route.experts == 2).all()  # the bias decides the selection ...
    scores = torch.sigmoid(x @ layer.router.gate.weight.T)
    torch.testing.assert_close(route.weights[:, 0], scores[:, 2])  # ... not the weights


def test_update_bias_moves_load_towards_balance():
    torch.manual_seed(1)
    layer = make_layer(num_experts=4, top_k=1, score_func="sigmoid")
    with torch.no_grad():
        layer.router.score_bias.zero_()
        layer.router.gate.weight[1] += 1.5  # expert 1 is favoured
    x = torch.randn(256, 8).abs()
    with torch.no_grad():
        layer(x)
    first_ratio = layer.load_ratio.item()
    layer.train()
    for _ in range(60):
        layer(x)  # in training mode (grad enabled) the load accumulates
        layer.update_bias(0.02)
        assert layer.load_since_update.sum() == 0
    with torch.no_grad():
        layer(x)
    assert layer.load_ratio.item() < 0.6 * first_ratio


def test_old_per_expert_state_dicts_load():
    torch.manual_seed(0)
    d, h, e = 8, 16, 4
    gate = torch.nn.Linear(d, e, bias=False)
    experts = [Expert(d, h) for _ in range(e)]
    old_state = {"router.gate.weight": gate.weight.detach().clone()}
    for i, expert in enumerate(experts):
        for key, value in expert.state_dict().items():
            old_state[f"experts.{i}.{key}"] = value
    layer = MoELayer(d, h, num_experts=e, top_k=2)
    layer.load_state_dict(old_state)
    x = torch.randn(12, d)
    with torch.no_grad():
        probs = torch.softmax(x @ gate.weight.T, -1)
        weights, chosen = probs.topk(2)
        expected = torch.stack(
            [
                sum(weights[t, s] * experts[int(chosen[t, s])](x[t]) for s in range(2))
                for t in range(12)
            ]
        )
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-4)
    # Nested inside a model, with a prefix, too.
    model = torch.nn.Sequential(MoELayer(d, h, num_experts=e, top_k=2))
    model.load_state_dict({f"0.{k}": v for k, v in old_state.items()})


def test_layer_copies_after_a_forward_without_its_graph():
    layer = MoELayer(d_model=8, d_hidden=16, num_experts=4, top_k=2)
    layer(torch.randn(5, 8)).sum().backward()
    assert layer.aux_loss is not None
    clone = copy.deepcopy(layer)
    assert clone.aux_loss is None and clone.z_loss is None
    x = torch.randn(3, 8)
    torch.testing.assert_close(clone(x), layer(x))


def test_bad_arguments_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"top_k \(3\) cannot exceed num_experts \(2\)"):
        MoELayer(8, 16, num_experts=2, top_k=3)
    with pytest.raises(ValueError, match="top_k .* exceeds the 2 experts a token can reach"):
        MoELayer(8, 16, num_experts=8, top_k=3, n_groups=4, topk_groups=1)
    with pytest.raises(ValueError, match=r"n_groups \(3\) must divide num_experts \(8\)"):
        MoELayer(8, 16, num_experts=8, n_groups=3)
    with pytest.raises(ValueError, match="topk_groups"):
        MoELayer(8, 16, num_experts=8, n_groups=2, topk_groups=3)
    with pytest.raises(ValueError, match="num_experts"):
        MoELayer(8, 16, num_experts=0)
    with pytest.raises(ValueError, match="capacity_factor"):
        MoELayer(8, 16, num_experts=2, capacity_factor=0)
    with pytest.raises(ValueError, match="score_func"):
        MoELayer(8, 16, num_experts=2, score_func="relu")
    with pytest.raises(ValueError, match="activation"):
        MoELayer(8, 16, num_experts=2, activation="tanh")
    layer = make_layer()
    with pytest.raises(ValueError, match=r"d_model=8"):
        layer(torch.randn(3, 5))
    with pytest.raises(TypeError, match="floating"):
        layer(torch.ones(3, 8, dtype=torch.long))
    x = torch.randn(4, 8)
    x[2, 3] = float("nan")
    with pytest.raises(FloatingPointError, match="router scores are not finite"):
        layer(x)
    with pytest.raises(RuntimeError, match="size mismatch"):  # mismatched hidden sizes
        MoELayer(8, 32, num_experts=4).load_state_dict(layer.state_dict())
