"""Checkpoint storage: round trips, ties, atomic replace under real crashes, validation,
refusal to unpickle code, latest_checkpoint, RNG capture."""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from deepseek.checkpoint import (
    Checkpoint,
    CheckpointError,
    get_rng_state,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    set_rng_state,
)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(tokens))


def _assert_same(a, b) -> None:
    """Structural equality of nested dicts/lists/tuples/tensors/python values."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def _trained(steps: int = 3):
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(2).mean().backward()
        opt.step()
    return model, opt


# --- round trips -------------------------------------------------------------------------


def test_full_round_trip_restores_everything(tmp_path):
    model, opt = _trained()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    trainer_state = {
        "optimizer": opt.state_dict(),
        "scaler": scaler.state_dict(),
        "progress": {"epoch": 2, "global_step": 30, "nested": {"lr": 0.01, "name": "run-a"}},
        "data": {"position": 17, "order": torch.randperm(20)},
        "rng": get_rng_state(),
        "losses": [1.5, 1.25, (3, "x")],
    }
    path = save_checkpoint(
        tmp_path / "ckpt", model.state_dict(), trainer_state, {"global_step": 30}
    )

    ckpt = load_checkpoint(path)
    assert isinstance(ckpt, Checkpoint) and ckpt.kind == "full" and ckpt.path == path
    assert ckpt.metadata == {"global_step": 30}
    _assert_same(dict(model.state_dict()), ckpt.model_state)
    _assert_same(trainer_state, ckpt.trainer_state)

    # The restored optimizer continues exactly like the original one.
    fresh = _mlp()
    load_weights(fresh, path)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    fresh_opt.load_state_dict(ckpt.trainer_state["optimizer"])
    batch = torch.randn(5, 4)
    for m, o in ((model, opt), (fresh, fresh_opt)):
        o.zero_grad()
        m(batch).pow(2).mean().backward()
        o.step()
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(p, q)

    meta = json.loads((path / "meta.json").read_text())
    assert meta["format"] == "deepseek-checkpoint" and meta["format_version"] == 1
    assert meta["kind"] == "full" and meta["deepseek_version"]
    assert meta["files"] == {
        name: (path / name).stat().st_size for name in ("model.safetensors", "trainer_state.pt")
    }


def test_weights_only_checkpoint(tmp_path):
    model = _mlp()
    path = save_checkpoint(tmp_path / "w", model.state_dict())
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "model.safetensors"]
    ckpt = load_checkpoint(path)
    assert ckpt.kind == "weights" and ckpt.trainer_state is None and ckpt.metadata == {}
    _assert_same(dict(model.state_dict()), ckpt.model_state)


def test_load_weights_into_fresh_model_gives_identical_outputs(tmp_path):
    model, opt = _trained()
    path = save_checkpoint(tmp_path / "c", model.state_dict(), {"optimizer": opt.state_dict()})
    fresh = _mlp()
    x = torch.randn(3, 4)
    assert not torch.equal(fresh(x), model(x))
    result = load_weights(fresh, path)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(fresh(x), model(x))


def test_tied_weights_stay_tied_and_are_stored_once(tmp_path):
    model = TiedLM()
    path = save_checkpoint(tmp_path / "tied", model.state_dict())
    loaded = load_checkpoint(path).model_state
    assert set(loaded) == {"embed.weight", "head.weight"}
    assert loaded["head.weight"].data_ptr() == loaded["embed.weight"].data_ptr()
    assert torch.equal(loaded["head.weight"], model.embed.weight)
    with safe_open(path / "model.safetensors", framework="pt") as f:
        assert list(f.keys()) == ["embed.weight"]  # stored once

    fresh = TiedLM()
    load_weights(fresh, path)
    assert fresh.head.weight is fresh.embed.weight
    tokens = torch.tensor([[1, 2, 3]])
    assert torch.equal(fresh(tokens), model(tokens))


def test_views_and_dtypes_round_trip(tmp_path):
    base = torch.arange(24.0).reshape(4, 6)
    state = {
        "base": base,
        "rows": base[1:3],
        "t": base.t(),
        "empty": torch.empty(0),
        "bf16": torch.randn(2, 3).to(torch.bfloat16),
        "int": torch.arange(5),
    }
    loaded = load_checkpoint(save_checkpoint(tmp_path / "v", state)).model_state
    for name, tensor in state.items():
        assert torch.equal(loaded[name], tensor), name
    assert loaded["rows"].data_ptr() != loaded["base"].data_ptr()  # stored as its own copy


def test_bad_inputs_fail_before_anything_is_written(tmp_path):
    with pytest.raises(TypeError, match=r"state_dict\(\)"):
        save_checkpoint(tmp_path / "a", _mlp())
    with pytest.raises(TypeError, match=r"model_state\['step'\] is a int"):
        save_checkpoint(tmp_path / "a", {"w": torch.ones(1), "step": 3})
    with pytest.raises(TypeError, match=r"metadata\['loss'\] is a Tensor"):
        save_checkpoint(tmp_path / "a", {"w": torch.ones(1)}, metadata={"loss": torch.ones(())})
    with pytest.raises(TypeError, match="trainer_state must be a mapping"):
        save_checkpoint(tmp_path / "a", {"w": torch.ones(1)}, [1, 2])
    with pytest.raises(ValueError, match="directory name"):
        save_checkpoint(tmp_path / "..", {"w": torch.ones(1)})
    assert list(tmp_path.iterdir()) == []


# --- atomic replace ----------------------------------------------------------------------


def test_replace_existing_checkpoint(tmp_path):
    path = tmp_path / "last"
    save_checkpoint(path, {"w": torch.zeros(3)}, {"step": 1}, {"global_step": 1})
    save_checkpoint(path, {"w": torch.ones(3)}, {"step": 2}, {"global_step": 2})
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt.model_state["w"], torch.ones(3)) and ckpt.trainer_state == {"step": 2}
    assert _leftovers(tmp_path) == []


class _NotPlainData:
    pass


@pytest.mark.parametrize(
    "bad_state, message",
    [
        ({"fn": lambda: 0}, "cannot be saved with torch.save"),
        ({"obj": _NotPlainData()}, r"weights_only=True\) refuses .*_NotPlainData"),
    ],
)
def test_failed_save_keeps_old_checkpoint_and_leaves_no_temp_dir(tmp_path, bad_state, message):
    path = tmp_path / "last"
    save_checkpoint(path, {"w": torch.zeros(3)}, {"step": 1})
    # model.safetensors is already written into the temporary directory when the
    # trainer state fails.
    with pytest.raises(TypeError, match=message):
        save_checkpoint(path, {"w": torch.ones(3)}, bad_state)
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt.model_state["w"], torch.zeros(3)) and ckpt.trainer_state == {"step": 1}
    assert _leftovers(tmp_path) == []


# --- validation --------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        load_weights(_mlp(), tmp_path / "nope")


def test_foreign_directories_are_rejected(tmp_path):
    hf = tmp_path / "bert"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    save_file({"w": torch.ones(1)}, hf / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"not a DeepSeek checkpoint.*config\.json") as err:
        load_checkpoint(hf)
    assert "load_weights" in str(err.value)

    other = tmp_path / "other"
    other.mkdir()
    (other / "meta.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a DeepSeek checkpoint.*something-else"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="is a file"):
        load_checkpoint(hf / "config.json")
    assert issubclass(CheckpointError, ValueError)


def test_newer_format_version_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "c", {"w": torch.ones(1)})
    meta = json.loads((path / "meta.json").read_text())
    meta["format_version"] = 2
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="newer DeepSeek.*upgrade deepseek-core"):
        load_checkpoint(path)


@pytest.mark.parametrize("name", ["model.safetensors", "trainer_state.pt"])
def test_truncated_file_is_reported(tmp_path, name):
    path = save_checkpoint(tmp_path / "c", _mlp().state_dict(), {"x": torch.randn(100)})
    file = path / name
    file.write_bytes(file.read_bytes()[:-40])
    with pytest.raises(CheckpointError, match=rf"incomplete or corrupted: {name} has"):
        load_checkpoint(path)
    file.unlink()
    with pytest.raises(CheckpointError, match=rf"incomplete or corrupted: {name} is missing"):
        load_checkpoint(path)


@pytest.mark.parametrize("name", ["model.safetensors", "trainer_state.pt"])
def test_corrupted_file_of_the_right_size_is_reported(tmp_path, name):
    path = save_checkpoint(tmp_path / "c", _mlp().state_dict(), {"x": torch.randn(100)})
    file = path / name
    data = bytearray(file.read_bytes())
    data[:16] = b"\xff" * 16  # header / zip signature
    file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{name} is corrupted.*checksum"):
        load_checkpoint(path)
    # Without the checksum, the format's own checks still notice this much damage.
    with pytest.raises(CheckpointError, match=rf"{name} .*corrupted"):
        load_checkpoint(path, verify=False)


def test_truncated_bare_safetensors_file(tmp_path):
    file = tmp_path / "w.safetensors"
    save_file({"weight": torch.ones(2, 2), "bias": torch.ones(2)}, file)
    model = nn.Linear(2, 2)
    load_weights(model, file)
    assert torch.equal(model.weight, torch.ones(2, 2))
    file.write_bytes(file.read_bytes()[:-4])
    with pytest.raises(CheckpointError, match=r"w\.safetensors is incomplete or corrupted"):
        load_weights(model, file)


def test_load_weights_mismatch_errors(tmp_path):
    path = save_checkpoint(tmp_path / "c", _mlp().state_dict())
    wider = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    with pytest.raises(ValueError, match=r"shape mismatches: 0\.weight: checkpoint \(8, 4\)") as e:
        load_weights(wider, path, strict=False)
    assert "strict=False" not in str(e.value)

    deeper = nn.Sequential(_mlp(), nn.Linear(2, 2))
    before = deeper[1].weight.detach().clone()
    with pytest.raises(ValueError, match="missing keys.*0.0.weight") as e:
        load_weights(deeper, path)
    assert "unexpected keys" in str(e.value) and "strict=False" in str(e.value)
    assert torch.equal(deeper[1].weight, before)  # nothing was loaded

    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), nn.Linear(2, 2))
    result = load_weights(model, path, strict=False)
    assert result.missing_keys == ["3.weight", "3.bias"] and result.unexpected_keys == []
    assert torch.equal(model[0].weight, load_checkpoint(path).model_state["0.weight"])

    pt = tmp_path / "model.pt"
    torch.save(_mlp().state_dict(), pt)
    with pytest.raises(CheckpointError, match="torch.load"):
        load_weights(_mlp(), pt)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_map_location(tmp_path):
    path = save_checkpoint(tmp_path / "c", {"w": torch.ones(1)})
    with pytest.raises(ValueError, match="no cuda device"):
        load_checkpoint(path, map_location="cuda")


# --- latest_checkpoint -------------------------------------------------------------------


def test_latest_checkpoint_by_step_ignoring_incomplete_and_temp_dirs(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None
    for step in (300, 100, 200):  # written out of order: the step decides, not the time
        save_checkpoint(tmp_path / f"step-{step}", {"w": torch.ones(1)}, {}, {"global_step": step})
    truncated = save_checkpoint(
        tmp_path / "step-400", {"w": torch.ones(50)}, metadata={"global_step": 400}
    )
    (truncated / "model.safetensors").write_bytes(b"x")
    no_meta = tmp_path / "step-500"
    no_meta.mkdir()
    (no_meta / "model.safetensors").write_bytes(b"x")
    # A complete-looking temp dir of an interrupted save must not count either.
    complete = save_checkpoint(
        tmp_path / "copy", {"w": torch.ones(1)}, metadata={"global_step": 900}
    )
    os.rename(complete, tmp_path / ".step-900.tmp-xyz")
    assert latest_checkpoint(tmp_path) == tmp_path / "step-300"


def test_latest_checkpoint_by_mtime_without_steps(tmp_path):
    old = save_checkpoint(tmp_path / "a", {"w": torch.ones(1)})
    new = save_checkpoint(tmp_path / "b", {"w": torch.ones(1)}, metadata={"global_step": 5})
    os.utime(old / "meta.json", (2e9, 2e9))
    os.utime(new / "meta.json", (1e9, 1e9))
    assert latest_checkpoint(tmp_path) == old


# --- RNG ---------------------------------------------------------------------------------


def _draw():
    return (
        [random.random(), random.gauss(0, 1)],
        np.random.standard_normal(3).tolist(),
        torch.rand(4),
    )


def test_rng_round_trip_is_exact_through_weights_only_load():
    random.gauss(0, 1)  # leave a cached Gaussian in python's and numpy's generators
    np.random.standard_normal(1)
    state = get_rng_state()
    expected = _draw()

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=True)
    _draw()  # move every generator on
    set_rng_state(restored)
    again = _draw()
    assert again[0] == expected[0] and again[1] == expected[1]
    assert torch.equal(again[2], expected[2])

    with pytest.raises(ValueError, match="get_rng_state"):
        set_rng_state({"torch": "not a tensor"})
