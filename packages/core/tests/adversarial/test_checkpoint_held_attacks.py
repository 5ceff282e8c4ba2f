"""Attacks that already held before issue 12, kept here as the adversarial suite's
record (moved from test_checkpoint_io.py): a malicious pickle in the trainer state, a
save into a directory that is not a checkpoint, a crash between the two renames of a
replace, and SIGKILLs at random points of back-to-back saves. Plus symlink swaps."""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

from deepseek.checkpoint import (
    Checkpoint,
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_refuses_to_replace_something_that_is_not_a_checkpoint(tmp_path):
    precious = tmp_path / "data"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a DeepSeek checkpoint"):
        save_checkpoint(precious, {"w": torch.ones(1)})
    assert (precious / "notes.txt").read_text() == "keep me"
    assert _leftovers(tmp_path) == []


def test_crash_between_the_two_renames_is_recovered(tmp_path):
    # The on-disk state a crash leaves between "old -> backup" and "new -> path".
    path = tmp_path / "last"
    save_checkpoint(path, {"w": torch.zeros(2)}, {"step": 1}, {"global_step": 1})
    backup = tmp_path / ".last.old-0badc0de"
    os.rename(path, backup)
    staging = tmp_path / ".last.tmp-abc123"
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"partial")

    with pytest.warns(UserWarning, match="interrupted"):
        ckpt = load_checkpoint(path)
    assert ckpt.trainer_state == {"step": 1} and ckpt.path == backup
    assert latest_checkpoint(tmp_path) == backup

    save_checkpoint(path, {"w": torch.ones(2)}, {"step": 2})
    assert load_checkpoint(path).trainer_state == {"step": 2}
    assert _leftovers(tmp_path) == []


_CRASH_CHILD = textwrap.dedent(
    """
    import sys
    import torch
    from deepseek.checkpoint import save_checkpoint

    path = sys.argv[1]
    model = {f"layer{i}.weight": torch.empty(256, 1024) for i in range(4)}  # 4 MiB
    optim = {"exp_avg": torch.empty(512, 1024)}  # 2 MiB
    version = 1
    while True:  # save over and over until killed
        for tensor in [*model.values(), *optim.values()]:
            tensor.fill_(version)
        save_checkpoint(path, model, {"version": version, "optim": optim}, {"version": version})
        if version == 1:
            print("ready", flush=True)  # one save done: the kills land in later ones
        version += 1
    """
)


def _versioned_state(version: int):
    model = {f"layer{i}.weight": torch.full((8, 8), float(version)) for i in range(2)}
    return model, {"version": version, "optim": {"exp_avg": torch.full((4,), float(version))}}


def _assert_consistent(ckpt: Checkpoint) -> int:
    version = ckpt.metadata["version"]
    assert ckpt.trainer_state["version"] == version
    tensors = [*ckpt.model_state.values(), *ckpt.trainer_state["optim"].values()]
    assert all(bool((t == version).all()) for t in tensors)
    return version


def test_sigkill_during_save_never_damages_the_checkpoint(tmp_path):
    delays = [0.0, 0.05, 0.15, 0.4]  # s after "ready"; the child saves nonstop
    script = tmp_path / "child.py"
    script.write_text(_CRASH_CHILD)
    roots = [tmp_path / f"run{i}" for i in range(len(delays))]
    for root in roots:
        model, trainer = _versioned_state(0)
        save_checkpoint(root / "last", model, trainer, {"version": 0})
    # Children run side by side to pay the torch import once in wall time.
    children = [
        subprocess.Popen([sys.executable, str(script), str(root / "last")], stdout=subprocess.PIPE)
        for root in roots
    ]
    try:
        for child in children:
            assert child.stdout.readline().strip() == b"ready"
        start = time.monotonic()
        for child, delay in zip(children, delays):
            time.sleep(max(0.0, start + delay - time.monotonic()))
            child.send_signal(signal.SIGKILL)
    finally:
        for child in children:
            child.kill()
            child.wait()
            child.stdout.close()

    versions = []
    for root in roots:
        path = root / "last"
        with warnings.catch_warnings(record=True) as caught:  # if killed between the renames
            warnings.simplefilter("always")
            versions.append(_assert_consistent(load_checkpoint(path)))
        assert all("interrupted" in str(w.message) for w in caught)
        assert _assert_consistent(load_checkpoint(latest_checkpoint(root))) == versions[-1]
        # The next save cleans up whatever the crash left.
        model, trainer = _versioned_state(99)
        save_checkpoint(path, model, trainer, {"version": 99})
        assert _assert_consistent(load_checkpoint(path)) == 99
        assert _leftovers(root) == []
    assert max(versions) > 0  # the children did overwrite the first checkpoint


class _Payload:
    """Unpickling this runs os.system: a stand-in for a malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant_trainer_state(path: Path, data: bytes) -> None:
    (path / "trainer_state.pt").write_bytes(data)
    meta = json.loads((path / "meta.json").read_text())
    meta["files"]["trainer_state.pt"] = len(data)  # sizes match: only the content is bad
    (path / "meta.json").write_text(json.dumps(meta))


def test_malicious_trainer_state_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = save_checkpoint(tmp_path / "c", {"w": torch.ones(1)}, {"step": 1})

    buffer = io.BytesIO()
    torch.save({"step": 1, "evil": _Payload(marker)}, buffer)
    _plant_trainer_state(path, buffer.getvalue())
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)
    # An attacker can rewrite the checksums too: weights_only=True is what holds.
    with pytest.raises(CheckpointError, match=r"execute code \((posix|nt)\.system\).*refuses"):
        load_checkpoint(path, verify=False)
    assert not marker.exists()

    _plant_trainer_state(path, pickle.dumps({"evil": _Payload(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match="never unpickles arbitrary objects|execute code"):
        load_checkpoint(path, verify=False)
    assert not marker.exists()

    # The payload is real: plain pickle would have run it.
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


def test_symlink_swapped_in_for_a_checkpoint_is_replaced_not_followed(tmp_path):
    outside = save_checkpoint(tmp_path / "elsewhere" / "theirs", {"w": torch.zeros(1)})
    root = tmp_path / "run"
    root.mkdir()
    (root / "last").symlink_to(outside, target_is_directory=True)
    save_checkpoint(root / "last", {"w": torch.ones(1)}, {"step": 2})
    assert not (root / "last").is_symlink()  # the link was replaced, its target untouched
    assert torch.equal(load_checkpoint(outside).model_state["w"], torch.zeros(1))
    assert load_checkpoint(root / "last").trainer_state == {"step": 2}
    assert _leftovers(root) == []


def test_symlink_to_other_data_is_never_overwritten(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("keep me")
    (tmp_path / "ckpt").symlink_to(data, target_is_directory=True)
    with pytest.raises(FileExistsError, match="not a DeepSeek checkpoint"):
        save_checkpoint(tmp_path / "ckpt", {"w": torch.ones(1)})
    assert (data / "notes.txt").read_text() == "keep me"
