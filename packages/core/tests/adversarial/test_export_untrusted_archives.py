"""ds.load_exported never unpickles (or loads native code) from an archive unless
``trusted=True`` (issue 12, item 1).

Each crafted archive hides a pickle whose loading creates a marker directory, in one of
the members torch.export.load reaches through an unpickling code path: the legacy
(torch < 2.8) layout's ``serialized_state_dict.json`` / ``.pt``, legacy weight and
constant blobs in a new-format archive, pickled weights, opaque and custom objects among
the constants, and the sample inputs. ``test_crafted_archive_is_live`` proves each
payload really runs when torch loads the file directly, so the refusals below are not
vacuous.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import shutil
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import deepseek as ds

from .conftest import pickled_payload

Members = dict[str, bytes]


def _export(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).eval()
    return ds.export(model, torch.randn(2, 4), tmp_path / "good.pt2")


def _members(archive: Path) -> Members:
    with zipfile.ZipFile(archive) as z:
        return {name: z.read(name) for name in z.namelist()}


def _root(members: Members) -> str:
    return next(iter(members)).split("/", 1)[0]


def _legacy(suffix: str) -> Callable[[Members, bytes], Members]:
    def craft(members: Members, payload: bytes) -> Members:
        from torch._export.serde.schema import SCHEMA_VERSION

        program = next(v for k, v in members.items() if k.endswith("models/model.json"))
        return {
            "version": ".".join(map(str, SCHEMA_VERSION)).encode(),
            "serialized_exported_program.json": program,
            f"serialized_state_dict.{suffix}": payload,
            "serialized_constants.pt": b"",
            "serialized_example_inputs.pt": b"",
        }

    return craft


def _legacy_blob(kind: str) -> Callable[[Members, bytes], Members]:
    """torch >= 2.8 still reads ``data/<kind>/model.pt`` first, unpickling it."""

    def craft(members: Members, payload: bytes) -> Members:
        return {**members, f"{_root(members)}/data/{kind}/model.pt": payload}

    return craft


def _pickled_weight(members: Members, payload: bytes) -> Members:
    root = _root(members)
    name = f"{root}/data/weights/model_weights_config.json"
    config = json.loads(members[name])
    entry = next(iter(config["config"].values()))
    entry["use_pickle"] = True
    return {
        **members,
        name: json.dumps(config).encode(),
        f"{root}/data/weights/{entry['path_name']}": payload,
    }


def _constant_object(prefix: str) -> Callable[[Members, bytes], Members]:
    def craft(members: Members, payload: bytes) -> Members:

        from .conftest import Payload

        root = _root(members)
        name = f"{root}/data/constants/model_constants_config.json"
        config = json.loads(members[name])
        config["config"]["evil"] = {
            "path_name": f"{prefix}0",
            "is_param": False,
            "use_pickle": True,
            "tensor_meta": None,
        }
        blob = payload if prefix != "opaque_obj_" else pickle.dumps(Payload(_MARKER[0]))
        return {
            **members,
            name: json.dumps(config).encode(),
            f"{root}/data/constants/{prefix}0": blob,
        }

    return craft


def _sample_inputs(members: Members, payload: bytes) -> Members:
    name = next(k for k in members if k.endswith("data/sample_inputs/model.pt"))
    return {**members, name: payload}


def _native_code(members: Members, payload: bytes) -> Members:
    return {**members, f"{_root(members)}/data/aotinductor/model/model.so": b"\x7fELF" + payload}


def _second_root(members: Members, payload: bytes) -> Members:
    return {**members, "other/data/weights/model.pt": payload}


_MARKER: list[Path] = []  # the opaque-object payload is a raw pickle, made per test

CRAFTED = {
    "legacy_serialized_state_dict_json": _legacy("json"),
    "legacy_serialized_state_dict_pt": _legacy("pt"),
    "legacy_weights_blob": _legacy_blob("weights"),
    "legacy_constants_blob": _legacy_blob("constants"),
    "pickled_weight": _pickled_weight,
    "opaque_object_constant": _constant_object("opaque_obj_"),
    "custom_object_constant": _constant_object("custom_obj_"),
    "pickled_sample_inputs": _sample_inputs,
    "aotinductor_native_code": _native_code,
    "second_root_folder": _second_root,
}
# Kinds whose payload torch.export.load itself runs (checked by test_crafted_archive_is_live).
LIVE = (
    "legacy_serialized_state_dict_json",
    "legacy_serialized_state_dict_pt",
    "legacy_weights_blob",
    "legacy_constants_blob",
    "pickled_weight",
    "opaque_object_constant",
)


def craft(tmp_path: Path, kind: str, marker: Path) -> Path:
    _MARKER[:] = [marker]
    members = CRAFTED[kind](_members(_export(tmp_path)), pickled_payload(marker))
    path = tmp_path / f"{kind}.pt2"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_crafted_archive_is_refused_and_runs_nothing(
    tmp_path: Path, marker: Path, kind: str
) -> None:
    path = craft(tmp_path, kind, marker)
    with pytest.raises(ValueError, match="trusted=True") as info:
        ds.load_exported(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("kind", LIVE)
def test_crafted_archive_is_live(tmp_path: Path, marker: Path, kind: str) -> None:
    """Sanity check of the attack itself: torch's own loader runs the payload."""
    path = craft(tmp_path, kind, marker)
    logging.disable(logging.CRITICAL)  # torch logs the fallback it takes
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The payload runs before torch notices that the rest is bogus.
            with contextlib.suppress(Exception):
                torch.export.load(path)
    finally:
        logging.disable(logging.NOTSET)
    assert marker.exists()
    shutil.rmtree(marker)


def test_trusted_flag_is_the_only_way_in(tmp_path: Path, marker: Path) -> None:
    """The refusal is specific: the same untouched export loads, and a crafted one only
    runs its payload when the caller says trusted=True."""
    good = _export(tmp_path)
    x = torch.randn(2, 4)
    assert ds.load_exported(good)(x).shape == (2, 3)
    path = craft(tmp_path, "pickled_weight", marker)
    with pytest.raises(ValueError):
        ds.load_exported(path)
    assert not marker.exists()
    # The weight is not a tensor; the point is that trusted=True unpickled it.
    with contextlib.suppress(ValueError):
        ds.load_exported(path, trusted=True)
    assert marker.exists()


def test_forced_weights_only_guard_backs_up_the_scan(tmp_path: Path, marker: Path) -> None:
    """Even if the member scan missed something, loading untrusted archives runs with every
    torch.load forced to weights_only=True."""
    from deepseek.compiler import _weights_only_loads

    path = craft(tmp_path, "legacy_serialized_state_dict_pt", marker)
    logging.disable(logging.CRITICAL)
    try:
        refused = pytest.raises(pickle.UnpicklingError)
        with _weights_only_loads(), refused, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.export.load(path)
    finally:
        logging.disable(logging.NOTSET)
    assert not marker.exists()


def test_bit_flip_in_an_exported_weight_is_detected(tmp_path: Path) -> None:
    good = _export(tmp_path)
    members = _members(good)
    name = next(k for k in members if k.endswith("data/weights/weight_0"))
    data = good.read_bytes()
    offset = data.index(members[name]) + 5  # stored uncompressed: the raw tensor bytes
    flipped = bytearray(data)
    flipped[offset] ^= 0x01
    bad = tmp_path / "flipped.pt2"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=r"corrupted: member .*weight_0 .*CRC-32"):
        ds.load_exported(bad)
    with pytest.raises(ValueError, match="CRC-32"):
        ds.load_exported(bad, trusted=True)
    # Without the check the flip loads silently as a different weight.
    x = torch.randn(2, 4)
    assert not torch.equal(ds.load_exported(bad, verify=False)(x), ds.load_exported(good)(x))
