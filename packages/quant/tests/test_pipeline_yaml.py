"""The compression pipeline as documented: three configs run by the real ``deepseek train``
command (one epoch each), ending in a saved int8 model and one table of every stage."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch

import deepseek as ds
from deepseek.cli import main
from deepseek.quantization import load

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
STAGES = ["compress_1_train.yaml", "compress_2_prune_distill.yaml", "compress_3_qat_int8.yaml"]
QUICK = ["--set", "trainer.max_epochs=1", "--set", "plot=false"]
ROWS = [
    "fp32 (trained)",
    "pruned 50% (before finetuning)",
    "pruned 50% + distilled",
    "QAT (fake quant)",
    "int8 (converted)",
]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Run the three stages from a scratch working directory (the configs' relative
    paths land there); return it and each stage's printed output."""
    pytest.importorskip("sklearn")  # the quickstart's digits
    work = tmp_path_factory.mktemp("compress")
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    outputs = []
    try:
        for name in STAGES:
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                code = main(["train", str(EXAMPLES / name), *QUICK])
            outputs.append(buffer.getvalue())
            assert code == 0, f"{name} failed:\n{buffer.getvalue()[-3000:]}"
    finally:
        mp.undo()
    return work, outputs


def test_each_stage_prints_the_table_so_far(pipeline: tuple[Path, list[str]]) -> None:
    _, outputs = pipeline
    for output, rows in zip(outputs, (ROWS[:1], ROWS[:3], ROWS)):
        table = output[output.index("| stage | val accuracy") :]
        for row in rows:
            assert f"| {row} |" in table, f"row {row!r} missing from:\n{table}"
    last = outputs[-1]
    assert "int8 model written to runs/compress/model_int8.pt2" in last


def test_report_holds_every_stage_with_numbers(pipeline: tuple[Path, list[str]]) -> None:
    work, _ = pipeline
    rows = json.loads((work / "runs/compress/report.json").read_text())["rows"]
    assert [r["stage"] for r in rows] == ROWS
    by = {r["stage"]: r for r in rows}
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["size_bytes"] > 0 and row["latency_ms"] > 0
    # Pruning halves every hidden layer: about a third of the parameters remain.
    assert by["pruned 50% + distilled"]["params"] < 0.4 * by["fp32 (trained)"]["params"]
    assert by["QAT (fake quant)"]["params"] == by["pruned 50% + distilled"]["params"]
    # One epoch of training already beats chance (10 classes) by far at every stage.
    assert by["fp32 (trained)"]["accuracy"] > 0.5
    assert by["int8 (converted)"]["accuracy"] > 0.5


def test_int8_file_reloads_and_agrees_with_the_report(pipeline: tuple[Path, list[str]]) -> None:
    """The saved archive loads on its own (reference int8 graph) and scores what the
    report measured with the compiled kernels."""
    work, _ = pipeline
    int8 = load(work / "runs/compress/model_int8.pt2", compiled=False)
    images, labels = quickstart().digits("val").tensors
    with torch.no_grad():
        accuracy = (int8(images).argmax(1) == labels).float().mean().item()
    rows = json.loads((work / "runs/compress/report.json").read_text())["rows"]
    reported = next(r for r in rows if r["stage"] == "int8 (converted)")["accuracy"]
    assert abs(accuracy - reported) <= 0.01


def test_stage_two_checkpoint_holds_the_student_only(pipeline: tuple[Path, list[str]]) -> None:
    work, _ = pipeline
    from deepseek.checkpoint import load_checkpoint, resolve_checkpoint_path

    best = resolve_checkpoint_path(work / "runs/compress/2_prune_distill/checkpoints", "best")
    keys = set(load_checkpoint(best).model_state)
    assert keys and all(k.startswith(("student.", "projections.")) for k in keys)
    assert not any(k.startswith("teacher") for k in keys)
    assert load_checkpoint(best).model_state["student.features.0.weight"].shape[0] == 16


def test_stage_three_starts_from_the_distilled_student(pipeline: tuple[Path, list[str]]) -> None:
    """Before any QAT step, the stage-3 model is exactly stage 2's student."""
    work, _ = pipeline
    from deepseek.checkpoint import load_checkpoint, resolve_checkpoint_path
    from deepseek.quantization.algorithms import initialized_from

    best = resolve_checkpoint_path(work / "runs/compress/2_prune_distill/checkpoints", "best")
    model = initialized_from(quickstart().SmallCNN(channels=32), str(best), (1, 1, 8, 8))
    state = load_checkpoint(best).model_state
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[f"student.{key}"]), key


def quickstart():
    """examples/quickstart.py, loaded by file location (it is not an installed module)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_quickstart_test", EXAMPLES / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ds_namespace_exposes_the_callbacks() -> None:
    from deepseek.plugins import registry

    for name in ("compression_report", "int8_export", "iterative_pruning"):
        assert registry("callback").provider(name).distribution == "deepseek-quant"
    assert ds.quantization.CompressionReport is not None


def test_static_ptq_from_yaml(pipeline: tuple[Path, list[str]], monkeypatch) -> None:
    """examples/compress_ptq.yaml: stage 1's weights, calibrated and converted, no step."""
    work, _ = pipeline
    monkeypatch.chdir(work)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["train", str(EXAMPLES / "compress_ptq.yaml"), "--set", "plot=false"])
    output = buffer.getvalue()
    assert code == 0, output[-3000:]
    assert "| steps" in output and output.split("| steps")[1].split("\n")[0].strip(" |") == "0"
    rows = json.loads((work / "runs/compress/ptq/report.json").read_text())["rows"]
    assert [r["stage"] for r in rows] == ["fp32 (trained)", "static PTQ int8 (no QAT)"]
    trained = json.loads((work / "runs/compress/report.json").read_text())["rows"][0]
    assert rows[0]["accuracy"] == trained["accuracy"]  # the loaded stage-1 weights
    assert abs(rows[1]["accuracy"] - rows[0]["accuracy"]) < 0.05
    assert (work / "runs/compress/ptq/model_int8.pt2").is_file()
