import re

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import deepseek as ds
from deepseek.nn.activation_checkpointing import ActivationCheckpointPolicy, CheckpointWrapper

HIDDEN = 16


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(HIDDEN, 2 * HIDDEN)
        self.fc2 = nn.Linear(2 * HIDDEN, HIDDEN)
        self.drop = nn.Dropout(0.3)
        self.norm = nn.LayerNorm(HIDDEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.drop(self.fc2(torch.nn.functional.gelu(self.fc1(x)))))


class Net(nn.Module):
    def __init__(self, depth: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(8, HIDDEN)
        self.layers = nn.ModuleList(Block() for _ in range(depth))
        self.head = nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def make_net(depth: int = 4) -> Net:
    torch.manual_seed(0)
    return Net(depth)


def grads_of(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    torch.manual_seed(123)  # same dropout masks in every run
    model(x).pow(2).mean().backward()
    # state_dict-style names, so wrapped and plain models compare key by key
    return {k.replace("module.", ""): p.grad.clone() for k, p in model.named_parameters()}


def assert_same_grads(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def wrapped_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, CheckpointWrapper)]


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("selective", [False, True])
def test_checkpoint_function_gives_identical_grads_with_dropout(selective: bool) -> None:
    torch.manual_seed(0)
    block = Block()
    x = torch.randn(4, HIDDEN)

    def run(use_checkpoint: bool) -> tuple[torch.Tensor, ...]:
        block.zero_grad()
        inp = x.clone().requires_grad_()
        torch.manual_seed(5)
        out = (
            ds.autograd.checkpoint(block, inp, selective=selective)
            if use_checkpoint
            else block(inp)
        )
        out.sum().backward()
        return (out.detach(), inp.grad, *(p.grad.clone() for p in block.parameters()))

    plain, ckpt = run(False), run(True)
    torch.manual_seed(6)
    assert not torch.equal(block(x), plain[0])  # dropout is active: masks follow the seed
    for a, b in zip(plain, ckpt):
        assert torch.equal(a, b)


def test_checkpoint_passes_keyword_arguments_to_fn() -> None:
    x = torch.randn(3, requires_grad=True)
    out = ds.autograd.checkpoint(lambda t, scale: t * scale, x, scale=2.0)
    out.sum().backward()
    assert torch.equal(x.grad, torch.full((3,), 2.0))


def test_checkpoint_rejects_bad_combinations() -> None:
    x = torch.randn(2, requires_grad=True)
    with pytest.raises(ValueError, match="non-reentrant"):
        ds.autograd.checkpoint(torch.sin, x, use_reentrant=True, selective=True)
    with pytest.raises(ValueError, match="context_fn"):
        ds.autograd.checkpoint(torch.sin, x, selective=True, context_fn=lambda: None)
    with pytest.raises(TypeError, match="callable"):
        ds.autograd.checkpoint(3, x)


def test_checkpoint_sequential_matches_plain() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(*(Block() for _ in range(4)))
    x = torch.randn(2, HIDDEN, requires_grad=True)
    plain = grads_of(net, x)
    torch.manual_seed(123)
    net.zero_grad()
    ds.autograd.checkpoint_sequential(net, 2, x).pow(2).mean().backward()
    assert_same_grads(plain, {k: p.grad for k, p in net.named_parameters()})
    with pytest.raises(ValueError, match="segments"):
        ds.autograd.checkpoint_sequential(net, 0, x)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (True, ["layers.0", "layers.1", "layers.2", "layers.3"]),
        (1, ["layers.0", "layers.1", "layers.2", "layers.3"]),
        (2, ["layers.0", "layers.2"]),
        (3, ["layers.0", "layers.3"]),
        (Block, ["layers.0", "layers.1", "layers.2", "layers.3"]),
        (
            (nn.Tanh, nn.Dropout),
            ["layers.0.drop", "layers.1.drop", "layers.2.drop", "layers.3.drop", "head.1"],
        ),
        ("layers.[13]", ["layers.1", "layers.3"]),
        ("*.fc2", ["layers.0.fc2", "layers.1.fc2", "layers.2.fc2", "layers.3.fc2"]),
        (re.compile(r"layers\.(0|1)"), ["layers.0", "layers.1"]),
        (lambda name, module: name == "head", ["head"]),
        ({"module_types": ["Block"], "every_n": 2}, ["layers.0", "layers.2"]),
        (
            ActivationCheckpointPolicy(name_pattern="head.*", module_types=(nn.Linear,)),
            ["head.0", "head.2"],
        ),
    ],
)
def test_policy_forms_pick_expected_modules_and_keep_grads(policy, expected, x) -> None:
    plain = grads_of(make_net(), x)
    model = ds.nn.apply_activation_checkpointing(make_net(), policy)
    assert sorted(wrapped_names(model)) == sorted(expected)
    assert_same_grads(plain, grads_of(model, x))


def test_selective_policy_gives_identical_grads(x) -> None:
    plain = grads_of(make_net(), x)
    model = ds.nn.apply_activation_checkpointing(make_net(), {"every_n": 1, "selective": True})
    assert all(m.selective for m in model.modules() if isinstance(m, CheckpointWrapper))
    assert_same_grads(plain, grads_of(model, x))


class CountMatmuls(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm):
            self.count += 1
        return func(*args, **(kwargs or {}))


def matmuls_in_backward(model: nn.Module, x: torch.Tensor) -> int:
    loss = model(x).pow(2).mean()
    with CountMatmuls() as counter:
        loss.backward()
    return counter.count


def test_selective_recompute_keeps_matmul_outputs(x) -> None:
    plain = matmuls_in_backward(make_net(), x)
    full = matmuls_in_backward(ds.nn.apply_activation_checkpointing(make_net(), True), x)
    selective = ds.nn.apply_activation_checkpointing(make_net(), {"every_n": 1, "selective": True})
    # Full recompute reruns the two linears of each of the 4 blocks; selective reruns none.
    assert full == plain + 8
    assert matmuls_in_backward(selective, x) == plain


def saved_activation_elements(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        if not isinstance(t, nn.Parameter):
            total += t.numel()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return total


def test_checkpointing_reduces_saved_activations(x) -> None:
    plain = saved_activation_elements(make_net(8), x)
    ckpt = saved_activation_elements(ds.nn.apply_activation_checkpointing(make_net(8)), x)
    assert ckpt < plain / 3


def test_autocast_bf16_runs_and_matches_plain_autocast(x) -> None:
    def run(model: nn.Module) -> dict[str, torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(123)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(x).float().pow(2).mean()
        loss.backward()
        return {k.replace("module.", ""): p.grad for k, p in model.named_parameters()}

    plain = run(make_net(2))
    ckpt = run(ds.nn.apply_activation_checkpointing(make_net(2), {"every_n": 1}))
    selective = run(
        ds.nn.apply_activation_checkpointing(make_net(2), {"every_n": 1, "selective": True})
    )
    for grads in (ckpt, selective):
        assert grads.keys() == plain.keys()
        for key in plain:
            torch.testing.assert_close(grads[key], plain[key], rtol=2e-2, atol=1e-3)


def test_state_dict_keys_are_interchangeable() -> None:
    plain = make_net()
    wrapped = ds.nn.apply_activation_checkpointing(make_net(), True)
    assert list(wrapped.state_dict()) == list(plain.state_dict())
    for key, value in plain.state_dict().items():
        assert torch.equal(wrapped.state_dict()[key], value)

    torch.manual_seed(1)
    other = Net()
    wrapped.load_state_dict(other.state_dict())  # strict by default
    assert torch.equal(wrapped.layers[2].module.fc1.weight, other.layers[2].fc1.weight)
    fresh = Net()
    fresh.load_state_dict(wrapped.state_dict())
    assert torch.equal(fresh.layers[2].fc1.weight, other.layers[2].fc1.weight)


def test_state_dict_with_inner_submodule_named_module() -> None:
    class Inner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.module(x)

    plain, wrapped = Inner(), ds.nn.checkpoint_wrapper(Inner())
    assert list(wrapped.state_dict()) == ["module.weight", "module.bias"]
    wrapped.load_state_dict(plain.state_dict())
    assert torch.equal(wrapped.module.module.weight, plain.module.weight)


def test_never_wraps_twice(x) -> None:
    model = ds.nn.apply_activation_checkpointing(make_net(), 2)
    ds.nn.apply_activation_checkpointing(model, True)
    assert wrapped_names(model) == [f"layers.{i}" for i in range(4)]
    assert all(not isinstance(m.module, CheckpointWrapper) for m in model.layers)
    wrapper = model.layers[0]
    assert ds.nn.checkpoint_wrapper(wrapper) is wrapper
    # Re-applying a policy whose modules are all wrapped already is not an error.
    assert ds.nn.apply_activation_checkpointing(model, Block) is model


def test_policy_names_are_unwrapped_names(x) -> None:
    model = ds.nn.apply_activation_checkpointing(make_net(), 2)
    seen: list[str] = []
    with pytest.raises(ValueError, match="matched no submodule"):
        ds.nn.apply_activation_checkpointing(model, lambda name, m: bool(seen.append(name)))
    assert "layers.1.fc1" in seen
    assert not any("module" in name for name in seen)


def test_policy_matching_nothing_raises_with_module_names() -> None:
    with pytest.raises(ValueError, match=r"matched no submodule.*layers\.0 \(Block\)"):
        ds.nn.apply_activation_checkpointing(make_net(), nn.Conv2d)
    with pytest.raises(ValueError, match="same-class"):
        ds.nn.apply_activation_checkpointing(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), True)


@pytest.mark.parametrize("bad", [3.5, [1, 2], None, False, object()])
def test_bad_policy_types_raise_type_error(bad) -> None:
    with pytest.raises(TypeError, match="policy"):
        ds.nn.apply_activation_checkpointing(make_net(), bad)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({}, ValueError),
        ({"every_n": 0}, ValueError),
        ({"every_n": True}, ValueError),
        ({"module_types": (int,)}, TypeError),
        ({"name_pattern": 3}, TypeError),
        ({"predicate": "x"}, TypeError),
        ({"every_n": 1, "selective": "yes"}, TypeError),
    ],
)
def test_policy_validates_fields(kwargs, error) -> None:
    with pytest.raises(error):
        ActivationCheckpointPolicy(**kwargs)


def test_policy_from_mapping_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="every_n"):
        ActivationCheckpointPolicy.from_value({"every_k": 2})


def test_wrapper_forwards_attributes_and_skips_checkpoint_without_grad() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(HIDDEN, 2, 32, dropout=0.1, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    ds.nn.apply_activation_checkpointing(encoder)  # TransformerEncoder reads layers[0].self_attn
    assert encoder.layers[0].self_attn.batch_first
    x = torch.randn(2, 3, HIDDEN)
    encoder.eval()
    with torch.no_grad():
        out = encoder(x)
    assert out.shape == x.shape and out.grad_fn is None


def test_containers_and_non_modules_are_rejected_by_wrapper() -> None:
    with pytest.raises(TypeError, match="no forward"):
        ds.nn.checkpoint_wrapper(nn.ModuleList([nn.Linear(2, 2)]))
    with pytest.raises(TypeError, match="nn.Module"):
        ds.nn.checkpoint_wrapper(lambda x: x)
    # "layers" names a ModuleList, which has no forward and so is never wrapped.
    with pytest.raises(ValueError, match="matched no submodule"):
        ds.nn.apply_activation_checkpointing(make_net(), "layers")
