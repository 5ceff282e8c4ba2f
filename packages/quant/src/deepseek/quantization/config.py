"""``QuantConfig``: what to quantize and how, for every path (QAT, static PTQ, dynamic)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

SCHEMES = ("symmetric", "asymmetric")
MODES = ("qat", "static", "dynamic")
OBSERVERS = ("moving_average", "minmax", "histogram")
FAKE_QUANT_BITS = range(2, 9)
EXPORT_BITS = (8,)


@dataclass
class QuantConfig:
    """How a model is quantized.

    ``weight_bits`` / ``activation_bits``: 2 to 8 for fake quantization (training and
    accuracy studies); the real int8 model (:func:`deepseek.quantization.convert`) needs 8.
    ``quant_scheme`` is the weights' scheme (symmetric: zero point 0; asymmetric: affine);
    ``activation_scheme`` defaults to asymmetric because the CPU int8 kernels take uint8
    activations. ``per_channel`` quantizes weights per output channel. ``mode`` picks the
    path: ``"qat"`` (fake-quant training), ``"static"`` (calibrate, then convert) or
    ``"dynamic"`` (int8 weights, activations quantized per batch: Linear-heavy models).
    ``skip`` keeps modules in float: names, glob patterns (``"head.*"``) or type names
    (``"LayerNorm"``). ``freeze_observers_step`` stops the scales from moving after that
    many optimizer steps (with :class:`FreezeQuantObservers` in the Trainer).

    >>> from deepseek.quantization import QuantConfig
    >>> QuantConfig(weight_bits=4).weight_bits
    4
    >>> QuantConfig(weight_bits=9)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: weight_bits=9 is not supported: fake quantization takes 2 to 8 bits ...
    """

    weight_bits: int = 8
    activation_bits: int = 8
    quant_scheme: str = "symmetric"
    activation_scheme: str = "asymmetric"
    per_channel: bool = True
    mode: str = "qat"
    observer: str = "moving_average"
    skip: Sequence[str] = field(default_factory=tuple)
    freeze_observers_step: int | None = None

    def __post_init__(self) -> None:
        for name in ("weight_bits", "activation_bits"):
            bits = getattr(self, name)
            if isinstance(bits, bool) or not isinstance(bits, int) or bits not in FAKE_QUANT_BITS:
                raise ValueError(
                    f"{name}={bits!r} is not supported: fake quantization takes 2 to 8 bits "
                    "(the real int8 export takes 8)"
                )
        for name, allowed in (
            ("quant_scheme", SCHEMES),
            ("activation_scheme", SCHEMES),
            ("mode", MODES),
            ("observer", OBSERVERS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not supported; choose one of "
                    f"{', '.join(map(repr, allowed))}"
                )
        if isinstance(self.skip, str):
            self.skip = (self.skip,)
        self.skip = tuple(self.skip)
        step = self.freeze_observers_step
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
            raise ValueError(f"freeze_observers_step must be a step count >= 0, got {step!r}")

    @property
    def exportable(self) -> bool:
        """Whether :func:`convert` can turn this configuration into a real int8 model."""
        return self.weight_bits in EXPORT_BITS and self.activation_bits in EXPORT_BITS
