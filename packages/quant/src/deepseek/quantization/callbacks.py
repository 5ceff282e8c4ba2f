"""Trainer callbacks that finish and measure a compression pipeline run from configs.

- ``int8_export`` (:class:`Int8Export`): at the end of fitting, converts the model to a
  real int8 model and saves it (``.pt2``, no pickled code): a QAT model is converted as
  trained; a float model is calibrated first on ``calibration_batches`` batches of the
  training data (static PTQ). ``skip_training: true`` does that at the start and trains
  nothing: static PTQ of a checkpoint from a config.
- ``compression_report`` (:class:`CompressionReport`): measures validation accuracy,
  parameters, file size and CPU latency of the run's model (and of the int8 model
  ``int8_export`` wrote), adds them as rows of a JSON file that the stages of a pipeline
  share, and prints the whole table.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from deepseek.callbacks.base import Callback
from deepseek.quantization.config import QuantConfig
from deepseek.quantization.pt2e import Int8Model, QuantizedModel, calibrate, convert, load, save


def _deployed(model: nn.Module) -> nn.Module:
    """The model a run ships: a distillation run's student, anything else as is."""
    student = getattr(model, "student", None)
    return student if isinstance(student, nn.Module) else model


def _loader(data: Any, batch_size: int | None) -> DataLoader | None:
    if data is None or isinstance(data, DataLoader):
        return data
    return DataLoader(data, batch_size=batch_size or 32)


def _inputs_of(batch: Any) -> Any:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class Int8Export(Callback):
    """Convert the trained (QAT) or calibrated (static PTQ) model to int8 and save it.

    ``path``: where the ``.pt2`` archive goes. ``calibration_batches``: training batches
    a float model is calibrated on. ``skip_training``: export at the start of fitting and
    stop (static PTQ without training). ``init_from`` (a checkpoint directory,
    ``<run>/checkpoints/best``/``last`` or a ``.safetensors`` file) loads trained weights
    into the run's model at the start of fitting (shrinking it to a pruned checkpoint's
    shapes, with ``example_shape``): static PTQ of an earlier run's model. ``stage``: the
    label of its row in a :class:`CompressionReport`. The other options are
    :class:`QuantConfig`'s, for the static path (a QAT model keeps its own).

    >>> Int8Export("model_int8.pt2", calibration_batches=8).config.mode
    'static'
    """

    def __init__(
        self,
        path: str = "model_int8.pt2",
        *,
        calibration_batches: int = 16,
        skip_training: bool = False,
        stage: str = "int8 (converted)",
        weight_bits: int = 8,
        activation_bits: int = 8,
        quant_scheme: str = "symmetric",
        activation_scheme: str = "asymmetric",
        per_channel: bool = True,
        observer: str = "histogram",
        skip: Sequence[str] = (),
        init_from: str | None = None,
        example_shape: Sequence[int] | None = None,
    ) -> None:
        if isinstance(calibration_batches, bool) or calibration_batches < 1:
            raise ValueError(f"calibration_batches must be >= 1, got {calibration_batches!r}")
        self.path = Path(path)
        if self.path.suffix != ".pt2":
            raise ValueError(f"path must end in .pt2 (a torch.export archive), got {path!r}")
        self.calibration_batches = calibration_batches
        self.skip_training = skip_training
        self.stage = stage
        self.init_from = init_from
        self.example_shape = tuple(example_shape) if example_shape is not None else None
        self.config = QuantConfig(
            weight_bits=weight_bits,
            activation_bits=activation_bits,
            quant_scheme=quant_scheme,
            activation_scheme=activation_scheme,
            per_channel=per_channel,
            mode="static",
            observer=observer,
            skip=tuple(skip),
        )
        self.int8: Int8Model | None = None  # reloaded from `path`, once written

    def setup(self, trainer: Any, stage: str) -> None:
        # Before a CompressionReport's on_fit_start measures the model, whatever the order.
        if stage == "fit" and self.init_from is not None:
            from deepseek.pruning.resize import load_into

            model = _deployed(trainer.unwrapped_model)
            if isinstance(model, QuantizedModel):
                raise ValueError(
                    "int8_export: init_from loads a float model; this run's model is a QAT "
                    "model already (give init_from to the qat algorithm instead)"
                )
            example = torch.randn(*self.example_shape) if self.example_shape else None
            with trainer.rebuild_optimizer():
                load_into(model, self.init_from, example_inputs=example)

    def on_fit_start(self, trainer: Any) -> None:
        if self.skip_training:
            self.export(trainer)
            trainer.should_stop = True

    def on_fit_end(self, trainer: Any) -> None:
        if self.int8 is None and trainer.is_global_zero:
            self.export(trainer)

    def export(self, trainer: Any) -> Int8Model:
        """Convert, save, and reload from the file (what is measured is what was saved)."""
        model = _deployed(trainer.unwrapped_model)
        train = _loader(trainer.train_data, trainer.batch_size)
        if isinstance(model, QuantizedModel):
            quantized = model
        else:
            if train is None:
                raise ValueError("int8_export calibrates a float model on data.train; none given")
            quantized = calibrate(model, train, self.config, num_batches=self.calibration_batches)
        example = _inputs_of(next(iter(train)))[:2] if train is not None else None
        if example is None:
            raise ValueError("int8_export needs training data for an example input")
        save(convert(quantized, compiled=False), self.path, example)
        self.int8 = load(self.path)
        if trainer.is_global_zero:
            print(f"int8 model written to {self.path} ({self.path.stat().st_size / 1024:.1f} KB)")
        return self.int8


class CompressionReport(Callback):
    """Measure this stage's model and print the pipeline's table.

    At the end of fitting, the run's model (a distillation run's student; a QAT model as
    fake-quant) is measured on the validation data: top-1 accuracy, parameters, weights
    file size (safetensors) and median CPU latency at ``latency_batch``. With an
    ``int8_export`` callback in the same run, the int8 model it saved is measured too
    (file size: the ``.pt2`` archive). ``before`` labels an extra row measured at the
    start of fitting (e.g. a freshly pruned model before finetuning). Rows go into
    ``path``, a JSON file the stages of a pipeline share (a stage run again replaces its
    rows), and the whole table is printed.

    >>> CompressionReport(stage="fp32", path="report.json").stage
    'fp32'
    """

    def __init__(
        self,
        stage: str,
        path: str = "compression_report.json",
        *,
        before: str | None = None,
        latency_batch: int = 1,
        repeats: int = 50,
    ) -> None:
        if not isinstance(stage, str) or not stage.strip():
            raise ValueError("stage must be a label for this stage's row, e.g. 'fp32 (trained)'")
        for name, value in (("latency_batch", latency_batch), ("repeats", repeats)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.stage = stage
        self.path = Path(path)
        self.before = before
        self.latency_batch = latency_batch
        self.repeats = repeats

    def on_fit_start(self, trainer: Any) -> None:
        if self.before and trainer.is_global_zero and trainer.resumed_from is None:
            self._rows = [measure(self.before, _deployed(trainer.unwrapped_model), trainer, self)]
        else:
            self._rows = []

    def on_fit_end(self, trainer: Any) -> None:
        if not trainer.is_global_zero:
            return
        rows = list(getattr(self, "_rows", []))
        rows.append(measure(self.stage, _deployed(trainer.unwrapped_model), trainer, self))
        export = next((cb for cb in trainer.callbacks if isinstance(cb, Int8Export)), None)
        if export is not None:
            int8 = export.int8 or export.export(trainer)
            rows.append(
                measure(export.stage, int8, trainer, self, size_bytes=export.path.stat().st_size)
            )
        table = update_report(self.path, rows)
        print(format_table(table))


def measure(
    stage: str,
    model: nn.Module,
    trainer: Any,
    report: CompressionReport,
    *,
    size_bytes: int | None = None,
) -> dict[str, Any]:
    """One row: accuracy on the trainer's validation data, parameters, size, latency."""
    val = _loader(trainer.val_data, trainer.batch_size)
    data = val if val is not None else _loader(trainer.train_data, trainer.batch_size)
    float_model = model.float_model if isinstance(model, QuantizedModel) else model
    if size_bytes is None:
        size_bytes = _weights_bytes(float_model)
    was_training = model.training
    if not isinstance(model, Int8Model):  # an exported graph has no train/eval switch
        model.eval()
    correct = total = 0
    fixed = getattr(data, "batch_size", None) if isinstance(model, Int8Model) else None
    with torch.no_grad():
        for batch in data:
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                correct = total = 0
                break
            inputs, target = batch
            logits = _predict(model, inputs, fixed)
            if logits.dim() != 2 or target.dim() != 1:
                correct = total = 0
                break
            correct += int((logits.argmax(1) == target).sum())
            total += len(target)
        example = _inputs_of(next(iter(data)))[:1]
    example = example.expand(report.latency_batch, *example.shape[1:]).contiguous()
    latency = median_latency_ms(model, example, report.repeats)
    if not isinstance(model, Int8Model):
        model.train(was_training)
    return {
        "stage": stage,
        "accuracy": correct / total if total else None,
        "params": sum(p.numel() for p in float_model.parameters())
        if not isinstance(model, Int8Model)
        else None,
        "size_bytes": int(size_bytes),
        "latency_ms": latency,
        "latency_batch": report.latency_batch,
    }


def median_latency_ms(
    model: nn.Module, inputs: torch.Tensor, repeats: int, *, warmup_s: float = 0.5
) -> float:
    """Median wall time of one forward pass after a warm-up of at least 30 calls and
    ``warmup_s`` seconds: the first calls at a new shape (oneDNN primitive creation,
    a compiled model's first runs) are tens of times slower than the steady state."""
    import time

    with torch.inference_mode():
        calls, start = 0, time.perf_counter()
        while calls < 30 or time.perf_counter() - start < warmup_s:
            model(inputs)
            calls += 1
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(inputs)
            times.append(time.perf_counter() - t0)
    return 1000 * sorted(times)[len(times) // 2]


def _predict(model: nn.Module, inputs: torch.Tensor, fixed: int | None) -> torch.Tensor:
    """Model outputs; for a compiled int8 model, batches padded to one size so it is
    compiled once (it specialises on the batch size)."""
    n = len(inputs)
    if fixed is None or n == fixed:
        return model(inputs)
    padded = torch.cat([inputs, inputs[-1:].expand(fixed - n, *inputs.shape[1:])])
    return model(padded)[:n]


def _weights_bytes(model: nn.Module) -> int:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file(tensors, str(path))
        return path.stat().st_size


def update_report(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> list[dict]:
    """Replace the rows of these stages in the JSON report at ``path`` (others kept, in
    order; new stages appended), write it atomically, return all rows."""
    from deepseek.checkpoint.atomic import write_atomically

    path = Path(path)
    table: list[dict[str, Any]] = []
    if path.is_file():
        try:
            table = list(json.loads(path.read_text(encoding="utf-8"))["rows"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path} is not a compression report written by this callback ({exc}); "
                "delete it or choose another path"
            ) from None
    for row in rows:
        same = [i for i, r in enumerate(table) if r.get("stage") == row["stage"]]
        if same:
            table[same[0]] = row
        else:
            table.append(row)
    text = json.dumps({"rows": table}, indent=2)
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return table


def format_table(rows: list[dict[str, Any]]) -> str:
    """The report as a Markdown table.

    >>> print(format_table([{"stage": "fp32", "accuracy": 0.98, "params": 1000,
    ...                      "size_bytes": 4096, "latency_ms": 0.1234, "latency_batch": 1}]))
    <BLANKLINE>
    | stage | val accuracy | parameters | file size (KB) | CPU latency, batch 1 (ms) |
    |---|---|---|---|---|
    | fp32 | 98.00% | 1,000 | 4.0 | 0.123 |
    """
    batch = rows[0].get("latency_batch", 1) if rows else 1
    lines = [
        "",
        f"| stage | val accuracy | parameters | file size (KB) | CPU latency, batch {batch} (ms) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        acc = f"{100 * r['accuracy']:.2f}%" if r.get("accuracy") is not None else "-"
        params = f"{r['params']:,}" if r.get("params") is not None else "-"
        lines.append(
            f"| {r['stage']} | {acc} | {params} | {r['size_bytes'] / 1024:.1f} | "
            f"{r['latency_ms']:.3f} |"
        )
    return "\n".join(lines)
