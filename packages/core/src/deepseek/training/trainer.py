"""The Trainer: a short coordinator over parts with one job each.

- ``deepseek.training.resolve``: names, classes and dicts into objects (once, here);
- ``deepseek.training.loss``: the step contract (how a batch becomes a loss);
- ``deepseek.training.loops``: the fit / validation / predict loops;
- ``deepseek.training.checkpointing``: checkpoint contents, resume, RNG;
- ``deepseek.training.strategy``: everything a parallelism changes (the step's
  forward-backward, clipping, optimizer step, state dicts, reductions);
- ``deepseek.training.step_log``: ``self.log`` / ``trainer.log``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import sys
import tempfile
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from deepseek import backends
from deepseek.callbacks.base import Callback
from deepseek.callbacks.progress import ProgressBar
from deepseek.training import checkpointing, loops, step_log
from deepseek.training.data import EpochSampler, as_dataloader
from deepseek.training.loss import (
    STEP_METHODS,
    NonFiniteLossGuard,
    StepDispatch,
    check_loss_fn,
)
from deepseek.training.loss import (
    _add_module_prefix as _add_module_prefix,
)
from deepseek.training.loss import (
    _strip_module_prefix as _strip_module_prefix,
)
from deepseek.training.loss import check_forward_takes as _check_forward_takes  # noqa: F401
from deepseek.training.loss import extract_loss as _extract_loss  # noqa: F401
from deepseek.training.loss import is_number as _is_number
from deepseek.training.precision import Precision
from deepseek.training.resolve import (
    NAN_POLICIES,
    SCHEDULER_INTERVALS,
    check_positive_int,
    resolve_callbacks,
    resolve_metrics,
    resolve_optimizer,
    resolve_precision,
    resolve_scheduler,
    resolve_strategy,
)
from deepseek.training.strategy import Strategy

LossFn = Callable[[Any, Any], torch.Tensor]

__all__ = ["Metrics", "MixedPrecisionTrainer", "StepDispatch", "Trainer"]


class Metrics(dict):
    """Latest value of each logged metric. Values are stored as 0-d tensors (no device
    sync on the hot path) and read back as Python floats."""

    _before_read: Callable[[], None] | None = None

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        if isinstance(value, torch.Tensor):
            if key == "train_loss" and self._before_read is not None:
                self._before_read()  # the deferred non-finite loss check
            value = value.item()
            super().__setitem__(key, value)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default  # noqa: SIM401 - converts tensors

    def items(self):  # type: ignore[override]
        return [(k, self[k]) for k in self.keys()]

    def values(self):  # type: ignore[override]
        return [self[k] for k in self.keys()]

    def as_floats(self) -> dict[str, Any]:
        return dict(self.items())

    def __repr__(self) -> str:
        return repr(self.as_floats())


class Trainer:
    """Fit a model with any registered backend, strategy, precision and callbacks.

    Example (a tiny regression, fp32, one process):
        >>> import torch, deepseek as ds
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
        >>> trainer = ds.Trainer(
        ...     torch.nn.Linear(4, 1), torch.optim.SGD, optimizer_kwargs={"lr": 0.1},
        ...     train_data=data, batch_size=16, loss_fn=torch.nn.functional.mse_loss,
        ...     max_epochs=2, seed=0, enable_progress_bar=False, default_root_dir=None,
        ... )
        >>> trainer.fit()
        >>> trainer.global_step
        8

    **The step contract.** A micro-batch's loss comes from, in order:

    1. ``model.training_step(batch)`` or ``model.training_step(batch, batch_idx)``
       (Lightning's signature), returning a scalar loss or a dict with ``"loss"`` plus
       any other values to log (logged as ``train_<key>``);
    2. ``loss_fn(output, target)`` where ``output = model(*batch[:-1])`` and
       ``target = batch[-1]`` (``loss_fn`` must take two arguments and return a scalar
       tensor);
    3. the model's own output: a scalar tensor, ``output.loss`` or ``output["loss"]``,
       with dict batches passed as ``model(**batch)``.

    ``validation_step(batch[, batch_idx])`` returns a loss or a dict of values (each
    averaged over the whole validation set, logged as ``val_<key>``);
    ``predict_step(batch[, batch_idx])`` returns anything.

    **Logging.** Inside ``training_step`` / ``validation_step`` of a plain ``nn.Module``,
    ``self.log(name, value, on_step=None, on_epoch=None, prog_bar=False)`` logs a value
    (the Trainer provides ``log`` while it runs the model); callbacks call
    ``trainer.log(...)``. In training, values are logged per step by default; in
    validation, averaged over the epoch. ``trainer.metrics`` holds the latest values as
    floats.

    **Several optimizers.** Pass a list of optimizers, or define
    ``configure_optimizers()`` on the model returning one or several (then
    ``optimizer`` may be omitted): all are stepped in order at each optimizer step.
    For full control (GANs), set ``automatic_optimization = False`` on the model: its
    ``training_step`` then calls ``self.manual_backward(loss)`` and steps
    ``self.optimizers()`` (= ``trainer.optimizers``) itself.

    Args:
        model: the ``nn.Module`` to train.
        optimizer: an optimizer instance, a list of instances, a ``torch.optim`` class
            or name (built with ``optimizer_kwargs`` over the trainable parameters), or
            None when the model defines ``configure_optimizers()``.
        optimizer_kwargs: keyword arguments for an optimizer class (``{"lr": 1e-3}``).
        train_data: a ``DataLoader`` or a map-style ``Dataset`` (with ``batch_size``);
            also accepted by ``fit``.
        val_data: validation data, same forms; also accepted by ``fit``/``validate``.
        batch_size: batch size for datasets given as ``Dataset`` objects.
        loss_fn: ``loss_fn(output, target) -> scalar tensor`` (see the step contract).
        max_epochs: epochs to train (default 1 unless ``max_steps`` is given).
        max_steps: stop after this many optimizer steps.
        backend: ``"auto"``, ``"cpu"``, ``"cuda"``, ... or a ``Backend``.
        strategy: ``"single"`` (default), ``"ddp"``, ... or a ``Strategy`` instance.
        precision: ``"auto"``, ``"fp32"``, ``"bf16-mixed"``, ``"fp16-mixed"`` or a
            ``Precision``; ``precision_kwargs`` configure a named one
            (``{"loss_scale": 128}``).
        accumulate_grad_batches: micro-batches per optimizer step (the loss is divided
            by the window, so gradients are means).
        gradient_clip_norm: clip the gradients' global 2-norm to this value.
        scheduler: an ``LRScheduler`` instance, class or name (built with
            ``scheduler_kwargs``), stepped every optimizer step or every epoch
            (``scheduler_interval="step"|"epoch"``).
        callbacks: ``Callback`` objects, registry names or ``{"name": ..., **options}``,
            called in the order given, except that ``ModelCheckpoint``s run after the
            others (so a checkpoint holds their state for the same step).
        seed: seeds the training run (backend RNGs and the data order) when the Trainer
            is built; seed before building the model to make its initialisation
            reproducible too.
        deterministic: use deterministic algorithms (slower on GPUs).
        compile: ``True`` or ``torch.compile`` options: compile the model (a one-time
            cost at the first steps, announced on stderr).
        gradient_checkpointing: activation checkpointing: ``True``, an int k (every k-th
            block), module classes, a name pattern, ``"selective"`` or an
            ``ActivationCheckpointPolicy`` (the wrapped blocks are announced).
        gradient_accumulation_steps: deprecated alias of ``accumulate_grad_batches``.
        scheduler_kwargs: keyword arguments for a scheduler class.
        scheduler_interval: ``"step"`` (default) or ``"epoch"``.
        precision_kwargs: options for a precision given by name.
        val_every_n_epochs: validate every n epochs (and after the last one); None never.
        val_every_n_steps: also validate every n optimizer steps (never twice at one
            step: the epoch-end validation is skipped when a step validation just ran).
        metrics: names (``["accuracy", "f1"]``), a dict of name -> metric (a callable
            ``fn(output, target)`` averaged per batch, or an accumulating metric with
            ``update/compute/reset`` such as a ``torchmetrics.Metric``, computed over the
            whole validation set).
        shuffle: shuffle the training data each epoch (reproducibly, from ``seed``).
        on_nan_loss: ``"raise"`` (default; checked on the device and reported at the
            next logging point), ``"skip"`` (skip such micro-batches; reads each loss on
            the host) or None.
        default_root_dir: output folder for checkpoints and logs (checked to be
            writable before training starts); None writes nothing by default.
        enable_progress_bar: a progress bar on a terminal, and a one-line summary per
            epoch on stderr when the output is not a terminal or ``CI`` is set.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Any = None,
        optimizer_kwargs: Mapping[str, Any] | None = None,
        train_data: Any = None,
        val_data: Any = None,
        batch_size: int | None = None,
        loss_fn: LossFn | None = None,
        max_epochs: int | None = None,
        max_steps: int | None = None,
        backend: str | backends.Backend = "auto",
        strategy: str | Strategy = "single",
        precision: str | Precision = "auto",
        accumulate_grad_batches: int = 1,
        gradient_clip_norm: float | None = None,
        scheduler: Any = None,
        callbacks: Iterable[Callback | str | Mapping[str, Any]] = (),
        seed: int | None = None,
        deterministic: bool = False,
        compile: bool | Mapping[str, Any] = False,
        gradient_checkpointing: Any = False,
        *,
        gradient_accumulation_steps: int | None = None,
        scheduler_kwargs: Mapping[str, Any] | None = None,
        scheduler_interval: str = "step",
        precision_kwargs: Mapping[str, Any] | None = None,
        val_every_n_epochs: int | None = 1,
        val_every_n_steps: int | None = None,
        metrics: Iterable[str] | Mapping[str, Callable] | None = None,
        shuffle: bool = True,
        on_nan_loss: str | None = "raise",
        default_root_dir: str | os.PathLike | None = "runs",
        enable_progress_bar: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        accumulate_grad_batches = _accumulation(
            accumulate_grad_batches, gradient_accumulation_steps
        )
        for name, value in (
            ("max_epochs", max_epochs),
            ("max_steps", max_steps),
            ("batch_size", batch_size),
            ("val_every_n_epochs", val_every_n_epochs),
            ("val_every_n_steps", val_every_n_steps),
        ):
            if value is not None:
                check_positive_int(name, value)
        if on_nan_loss not in NAN_POLICIES:
            raise ValueError(f"on_nan_loss must be one of {NAN_POLICIES}, got {on_nan_loss!r}")
        if scheduler_interval not in SCHEDULER_INTERVALS:
            raise ValueError(
                f"scheduler_interval must be one of {SCHEDULER_INTERVALS}, "
                f"got {scheduler_interval!r}"
            )
        if gradient_clip_norm is not None and not gradient_clip_norm > 0:
            raise ValueError(f"gradient_clip_norm must be > 0, got {gradient_clip_norm!r}")
        check_loss_fn(loss_fn)
        for name, data in (("train_data", train_data), ("val_data", val_data)):
            as_dataloader(data, batch_size or 1, what=name)  # IterableDataset etc.: fail now

        self.backend = backends.get(backend)
        self.strategy = resolve_strategy(strategy)
        self.precision = resolve_precision(precision, self.backend, precision_kwargs or {})
        self.callbacks: list[Callback] = resolve_callbacks(callbacks)
        if enable_progress_bar and not any(isinstance(cb, ProgressBar) for cb in self.callbacks):
            self.callbacks.append(ProgressBar())

        self.seed = seed
        self.deterministic = deterministic
        if seed is not None:
            self.backend.manual_seed(seed)
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False

        user_model = model
        self.automatic_optimization = bool(getattr(model, "automatic_optimization", True))
        self.strategy.setup(self.backend)
        if gradient_checkpointing not in (False, None):
            from deepseek.nn.activation_checkpointing import apply_activation_checkpointing

            model = apply_activation_checkpointing(model, gradient_checkpointing)
            _announce_checkpointing(model)
        if any(hasattr(model, step) for step in STEP_METHODS):
            model = StepDispatch(model)
        self.strategy.connect_precision(self.precision)  # e.g. FSDP's mixed-precision policy
        self.model = self.strategy.setup_model(model)
        self.optimizers: list[torch.optim.Optimizer] = [
            self.strategy.setup_optimizer(opt)
            for opt in _build_optimizers(optimizer, optimizer_kwargs, self.model, user_model)
        ]
        if len(self.optimizers) > 1 and getattr(self.precision, "scaler", None) is not None:
            raise ValueError(
                "several optimizers with fp16-mixed's dynamic loss scale are not supported "
                "(one GradScaler would update once per optimizer); use bf16-mixed, fp32, or "
                "a static scale: precision_kwargs={'loss_scale': 1024}"
            )
        self.scheduler = resolve_scheduler(scheduler, scheduler_kwargs, self.optimizers[0])
        self.scheduler_interval = scheduler_interval
        if compile:
            from deepseek.compiler import compile as ds_compile

            options = dict(compile) if isinstance(compile, Mapping) else {}
            self.model = ds_compile(self.model, **options)
            _say(
                "compile=True: the model is compiled at its first steps (a one-time cost, "
                "often tens of seconds; later steps run faster)"
            )

        self._user_model = self.strategy.unwrap(self.model)  # looked up once, used per step
        self._forward_checked = False
        self._has_step = {name: hasattr(self._user_model, name) for name in STEP_METHODS}
        self._autocast_is_noop = (
            type(self.precision).autocast is Precision.autocast and self.precision.dtype is None
        )
        step_log.attach(self._user_model)
        if not self.automatic_optimization:
            _attach_manual_optimization(self._user_model)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.loss_fn = loss_fn
        self.metric_collection = resolve_metrics(metrics)
        self.max_epochs = max_epochs if max_epochs is not None or max_steps else 1
        self.max_steps = max_steps
        self.accumulate_grad_batches = accumulate_grad_batches
        self.gradient_clip_norm = gradient_clip_norm
        self.val_every_n_epochs = val_every_n_epochs
        self.val_every_n_steps = val_every_n_steps
        self.on_nan_loss = on_nan_loss
        self.default_root_dir = Path(default_root_dir) if default_root_dir is not None else None
        self.enable_progress_bar = enable_progress_bar
        self.train_data = train_data
        self.val_data = val_data

        # Progress: what a checkpoint records and a resume restores.
        self.current_epoch = 0
        self.global_step = 0
        self.batch_idx = 0  # micro-batches consumed in the current epoch
        self.optimizer_stepped = False  # whether the last micro-batch ended with a step
        self.should_stop = False
        self.interrupted = False  # set when SIGINT stopped fit
        self.nan_losses_skipped = 0
        self.metrics = Metrics()
        self.progress_bar_metrics: set[str] = set()
        self.num_training_batches = 0
        self.stage: str | None = None
        self.resumed_from: Path | None = None
        self._data_seed = seed if seed is not None else int(torch.randint(0, 2**31, ()).item())
        self._epoch_done = False
        self._iterator_started = False
        self._last_val_step: int | None = None
        self._pending_rng: dict[str, Any] | None = None
        self._rng_after_iterator = True
        self._interrupted = False
        self._nan_guard = NonFiniteLossGuard(on_nan_loss)
        self.metrics._before_read = lambda: self._nan_guard.check(self)
        self._logging_stage = "train"
        self._epoch_logs = {s: step_log.EpochAccumulator() for s in ("train", "val", "test")}
        self._metric_warned: set[str] = set()
        self._loss_hooks = [
            cb for cb in self.callbacks if type(cb).on_train_loss is not Callback.on_train_loss
        ]
        self._teardown_strategy = weakref.finalize(self, self.strategy.teardown)

    # -- public API ------------------------------------------------------------------------
    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The (first) optimizer; ``optimizers`` lists all of them."""
        return self.optimizers[0]

    @optimizer.setter
    def optimizer(self, value: torch.optim.Optimizer) -> None:
        self.optimizers[0] = value

    @property
    def is_global_zero(self) -> bool:
        return self.strategy.is_global_zero

    @property
    def unwrapped_model(self) -> nn.Module:
        """The user's module, inside any wrapper (DDP, compile, StepDispatch)."""
        return self._user_model

    @contextlib.contextmanager
    def rebuild_optimizer(self) -> Iterator[None]:
        """Change the model's parameters inside this block; on exit every optimizer is
        rebuilt over the model's current parameters, and the scheduler follows it.

        For changes that replace parameter tensors mid-run (physical pruning, a new
        head). Each parameter takes the place of the one that had its name before: its
        group (hyper-parameters, the current learning rate) and, when its shape did not
        change, its optimizer state (moments, step count); a parameter with a new name
        joins the first group. Single-process strategies only (a distributed wrapper
        holds the old parameters).

        >>> import torch
        >>> from deepseek import Trainer
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
        >>> trainer = Trainer(model, torch.optim.SGD, {"lr": 0.1}, enable_progress_bar=False)
        >>> with trainer.rebuild_optimizer():
        ...     model[1] = torch.nn.Linear(8, 3)
        >>> [tuple(p.shape) for p in trainer.optimizer.param_groups[0]["params"]]
        [(8, 4), (8,), (3, 8), (3,)]
        """
        if self.strategy.world_size > 1:
            raise RuntimeError(
                "rebuild_optimizer() changes parameters under a single-process strategy "
                f"only; this run uses {self.strategy!r} with {self.strategy.world_size} processes"
            )
        model = self._user_model
        names = {id(p): name for name, p in model.named_parameters()}
        yield
        current = dict(model.named_parameters())
        placed: set[str] = set()
        layouts = []  # per optimizer: per group, the (name, old parameter) pairs it keeps
        for old in self.optimizers:
            groups = []
            for group in old.param_groups:
                params = []
                for p in group["params"]:
                    name = names.get(id(p))
                    if name in current and name not in placed and current[name].requires_grad:
                        params.append((name, p))
                        placed.add(name)
                groups.append((group, params))
            layouts.append(groups)
        extra = [n for n, p in current.items() if n not in placed and p.requires_grad]
        layouts[0][0][1].extend((n, None) for n in extra)
        for i, (old, groups) in enumerate(zip(self.optimizers, layouts)):
            specs = []
            for group, params in groups:
                spec = {k: v for k, v in group.items() if k not in ("params", "param_names")}
                spec["params"] = [current[n] for n, _ in params]
                if "param_names" in group:
                    spec["param_names"] = [n for n, _ in params]
                specs.append(spec)
            # Only the defaults the constructor takes (AdamW keeps one it sets itself);
            # every group carries its own full set of hyper-parameters anyway.
            accepted = inspect.signature(type(old)).parameters
            new = type(old)(specs, **{k: v for k, v in old.defaults.items() if k in accepted})
            new.defaults = dict(old.defaults)
            for _group, params in groups:
                for name, p in params:
                    state = old.state.get(p) if p is not None else None
                    if state and p.shape == current[name].shape:
                        new.state[current[name]] = state
            new = self.strategy.setup_optimizer(new)
            self._repoint_scheduler(old, new)
            self.optimizers[i] = new

    def _repoint_scheduler(self, old: torch.optim.Optimizer, new: torch.optim.Optimizer) -> None:
        schedulers = [self.scheduler, *getattr(self.scheduler, "_schedulers", [])]
        for scheduler in schedulers:
            if scheduler is not None and getattr(scheduler, "optimizer", None) is old:
                scheduler.optimizer = new
                # torch's schedulers mark their optimizer's step() to check the call order;
                # the new optimizer inherits the mark instead of tripping that check.
                if hasattr(old.step, "_wrapped_by_lr_sched"):
                    new.step = _tracked_step(new)
                    new._opt_called = getattr(old, "_opt_called", False)

    def fit(
        self,
        train_data: Any = None,
        val_data: Any = None,
        resume: str | os.PathLike | None = None,
        resume_weights_only: bool = False,
    ) -> None:
        """Train until ``max_epochs``/``max_steps`` or a callback sets ``should_stop``.

        ``resume="last"`` continues from the newest checkpoint written by a
        ``ModelCheckpoint`` (starting fresh, with a warning, when there is none);
        a path continues from that checkpoint, mid-epoch if it was saved mid-epoch, and
        bit-exactly (weights, optimizer, RNG, data order) wherever it was saved.

        Ctrl-C (SIGINT) finishes the current step, writes a checkpoint, prints where it
        is and how to resume, and returns (``trainer.interrupted`` is then True); a
        second Ctrl-C stops at once.

        ``resume_weights_only=True`` loads only the model weights from ``resume`` and
        starts a fresh run (new optimizer and schedule, step 0): for a changed optimizer
        class, or fine-tuning from another run.
        """
        if train_data is not None:
            self.train_data = train_data
        if val_data is not None:
            self.val_data = val_data
        train_loader = self._train_loader(self.train_data)
        val_loader = self._eval_loader(self.val_data)
        self.num_training_batches = len(train_loader)

        def body() -> None:
            self._check_output_folders()
            if resume is not None:
                path = checkpointing.restore(self, resume, weights_only=resume_weights_only)
                if path is not None:
                    self.resumed_from = path
                    self._nan_guard._since_step = self.global_step
                    _say(f"resumed from {_describe(path)}: epoch {self.current_epoch}, "
                         f"batch {self.batch_idx}, step {self.global_step}")  # fmt: skip
            with _sigint_stops(self):
                loops.fit_loop(self, train_loader, val_loader)
            if self._interrupted:
                self._save_on_interrupt()

        self.interrupted = self._interrupted = False
        self._run_stage("fit", body)

    def validate(
        self, val_data: Any = None, ckpt_path: str | os.PathLike | None = None
    ) -> dict[str, float]:
        """Run the validation loop once and return its metrics (``val_loss``, ...).

        ``ckpt_path="best"`` / ``"last"`` / a path first loads those weights (the best or
        newest checkpoint of this Trainer's ``ModelCheckpoint``); None scores the current
        weights.
        """
        loader = self._eval_loader(val_data if val_data is not None else self.val_data)
        if loader is None:
            raise ValueError("validate() needs data: pass val_data here or to the Trainer")
        self._restore_weights_for(ckpt_path, "validate")
        return self._run_stage("validate", lambda: loops.validation_loop(self, loader))

    def test(self, data: Any, ckpt_path: str | os.PathLike | None = None) -> dict[str, float]:
        """Score ``data`` once (metrics named ``test_loss``, ``test_<metric>``, ...), with
        the same step contract as validation; ``ckpt_path`` as in ``validate``."""
        loader = self._eval_loader(data, what="test data")
        if loader is None:
            raise ValueError("test() needs data: trainer.test(test_data)")
        self._restore_weights_for(ckpt_path, "test")
        return self._run_stage("test", lambda: loops.validation_loop(self, loader, prefix="test"))

    def predict(self, data: Any, ckpt_path: str | os.PathLike | None = None) -> Any:
        """Model outputs for every batch of ``data`` (concatenated when they are tensors);
        ``ckpt_path`` as in ``validate``."""
        loader = self._eval_loader(data, what="predict data")
        if loader is None:
            raise ValueError("predict() needs data")
        self._restore_weights_for(ckpt_path, "predict")
        return self._run_stage("predict", lambda: loops.predict_loop(self, loader))

    def save_checkpoint(
        self, path: str | os.PathLike, weights_only: bool = False, **metadata: Any
    ) -> Path:
        """Write a checkpoint directory (atomically). ``weights_only=True`` stores just the
        model weights; otherwise everything an exact resume needs."""
        return checkpointing.save(self, path, weights_only=weights_only, **metadata)

    def log(
        self,
        name: str,
        value: Any,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        prog_bar: bool = False,
    ) -> None:
        """Log ``value`` (a number or a one-element tensor) under ``name``.

        In training, ``on_step`` (default True) stores the latest value in
        ``trainer.metrics``; ``on_epoch`` (default False) also stores the epoch's mean at
        the epoch's end. In validation/test the default is the mean over the whole loop.
        ``prog_bar=True`` shows it on the progress bar.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"log() needs a metric name (a non-empty str), got {name!r}")
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(
                    f"log({name!r}, ...) needs a number or a one-element tensor, got a "
                    f"tensor of shape {tuple(value.shape)}; reduce it first (e.g. .mean())"
                )
            value = value.detach().reshape(())
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(
                f"log({name!r}, ...) needs a number or a one-element tensor, "
                f"got {type(value).__name__}"
            )
        training = self._logging_stage == "train"
        if on_step is None:
            on_step = training
        if on_epoch is None:
            on_epoch = not training
        if prog_bar:
            self.progress_bar_metrics.add(name)
        if on_step:
            self.metrics[name] = value
        if on_epoch:
            key = f"{name}_epoch" if on_step else name
            self._epoch_logs[self._logging_stage].add(key, value)

    def observe_loss(self, loss: torch.Tensor) -> bool:
        """For strategies that run their own step: record a micro-batch's detached loss
        for the ``on_nan_loss`` policy; True when the policy says to skip its backward."""
        return self._nan_guard.observe(self, loss)

    # -- stages ----------------------------------------------------------------------------
    def teardown(self) -> None:
        """Release the strategy's resources (process groups, ...). Called when a stage
        fails, and when the Trainer is garbage collected or the interpreter exits."""
        self._teardown_strategy()

    def _run_stage(self, stage: str, body: Callable[[], Any]) -> Any:
        self.stage = stage
        failed = False
        try:
            for cb in self.callbacks:
                cb.setup(self, stage)
            with step_log.active(self):
                return body()
        except BaseException as exc:
            try:
                for cb in self.callbacks:
                    cb.on_exception(self, exc)
            finally:
                failed = True
            raise
        finally:
            try:
                for cb in self.callbacks:
                    cb.teardown(self, stage)
            finally:
                self.stage = None
                if failed:  # the run is over: release the strategy's resources now
                    self._teardown_strategy()

    def _save_on_interrupt(self) -> None:
        self.interrupted = True
        root = next((Path(d) for cb in self.callbacks if (d := getattr(cb, "dirpath", None))), None)
        if root is None and self.default_root_dir is not None:
            root = self.default_root_dir / "checkpoints"
        where = f"epoch {self.current_epoch}, batch {self.batch_idx}, step {self.global_step}"
        if root is None:
            _say(f"interrupted at {where}; no checkpoint written (default_root_dir=None)")
            return
        path = self.save_checkpoint(root / f"interrupted-step_{self.global_step}")
        _say(
            f"interrupted at {where}; checkpoint written to {path}. Resume with "
            f"trainer.fit(resume={str(path)!r}) or deepseek train CONFIG "
            f"--set trainer.resume={path}"
        )

    def _restore_weights_for(self, ckpt_path: str | os.PathLike | None, what: str) -> None:
        if ckpt_path is None:
            return
        path = self._checkpoint_for(ckpt_path)
        checkpoint = self.strategy.load_checkpoint(path)
        self.strategy.load_model_state_dict(self.model, checkpoint.model_state)
        _say(f"{what}: weights from {_describe(path)}")

    def _checkpoint_for(self, which: str | os.PathLike) -> Path:
        try:
            from deepseek.checkpoint import resolve_checkpoint_path
        except ImportError:
            resolve_checkpoint_path = None
        if resolve_checkpoint_path is not None:
            return Path(resolve_checkpoint_path(self, which))
        if str(which) in ("best", "last"):
            attr = f"{which}_model_path"
            for cb in self.callbacks:
                found = getattr(cb, attr, None)
                if found and Path(found).exists():
                    return Path(found)
            if str(which) == "last" and (path := checkpointing.resolve_resume_path(self, "last")):
                return path
            raise FileNotFoundError(
                f"ckpt_path={str(which)!r}: this Trainer has no {which} checkpoint (add a "
                "ModelCheckpoint callback, e.g. ModelCheckpoint(monitor='val_loss'), and fit "
                "first), or pass the checkpoint's path"
            )
        path = Path(which)
        if not path.exists():
            raise FileNotFoundError(f"ckpt_path={str(which)!r}: no such checkpoint")
        return path

    def _check_output_folders(self) -> None:
        """Fail before training, not after an epoch, when an output folder is unwritable."""
        if not self.is_global_zero:
            return
        folders = {self.default_root_dir} if self.default_root_dir is not None else set()
        for cb in self.callbacks:
            for attr in ("dirpath", "save_dir"):
                folder = getattr(cb, attr, None)
                if isinstance(folder, (str, os.PathLike)):
                    folders.add(Path(folder))
        for folder in sorted(folders, key=str):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=folder):
                    pass
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                raise PermissionError(
                    f"cannot write to the output folder {folder} ({reason}); pass a writable "
                    "default_root_dir= (or callback folder) before training starts"
                ) from None

    # -- hooks the loops call ----------------------------------------------------------------
    def _call(self, hook: str) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self)

    def _apply_loss_hooks(self, loss: torch.Tensor, batch: Any) -> torch.Tensor:
        for cb in self._loss_hooks:
            new = cb.on_train_loss(self, loss, batch)
            if new is not None:
                loss = new
        return loss

    def _log_step_extras(self, out: Mapping[str, Any], prefix: str) -> None:
        for key, value in out.items():
            if key == "loss":
                continue
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.detach().reshape(())
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            self.metrics[key if key.startswith(prefix) else prefix + key] = value

    def _flush_epoch_logs(self, stage: str) -> dict[str, float]:
        return self._epoch_logs[stage].flush()

    @property
    def metric_fns(self) -> dict[str, Any]:
        """The validation metrics by name (objects with update/compute/reset)."""
        return dict(self.metric_collection.metrics) if self.metric_collection else {}

    def _update_metrics(self, output: Any, target: Any) -> None:
        if output is None or target is None:
            for name in self.metric_fns:
                if name not in self._metric_warned:
                    self._metric_warned.add(name)
                    warnings.warn(f"metric {name!r} cannot be computed: {_NO_PAIR}", stacklevel=4)
            return
        self.metric_collection.update(output, target)

    def _epoch_summary(self) -> None:
        logs = self._flush_epoch_logs("train")
        self.metrics.update(logs)
        if not (self.enable_progress_bar and self.is_global_zero) or _interactive():
            return
        parts = [f"{k}={v:.4g}" for k, v in self.metrics.as_floats().items() if _is_number(v)]
        total = f"/{self.max_epochs}" if self.max_epochs is not None else ""
        _say(f"epoch {self.current_epoch + 1}{total} step {self.global_step}: " + " ".join(parts))

    def _max_steps_reached(self) -> bool:
        return self.max_steps is not None and self.global_step >= self.max_steps

    def _finished(self) -> bool:
        if self.should_stop or self._max_steps_reached():
            return True
        return self.max_epochs is not None and self.current_epoch >= self.max_epochs

    def _validate_this_epoch(self) -> bool:
        if self.val_every_n_epochs is None:
            return False
        return (self.current_epoch + 1) % self.val_every_n_epochs == 0 or self._finished_after()

    def _finished_after(self) -> bool:
        """Whether this epoch is the last one (validate at the end of training)."""
        last_epoch = self.max_epochs is not None and self.current_epoch + 1 >= self.max_epochs
        return last_epoch or self.should_stop or self._max_steps_reached()

    # -- data ------------------------------------------------------------------------------
    def _train_loader(self, data: Any) -> DataLoader:
        if data is None:
            raise ValueError("fit() needs training data: pass train_data to the Trainer or fit()")
        loader = as_dataloader(data, self.batch_size, what="train_data")
        shuffle = self.shuffle
        if isinstance(data, DataLoader):  # keep the user's choice of shuffling
            if isinstance(data.sampler, EpochSampler):
                shuffle = data.sampler.shuffle
            else:
                shuffle = isinstance(data.sampler, torch.utils.data.RandomSampler)
        loader = self.strategy.setup_dataloader(
            loader, shuffle=shuffle, seed=self._data_seed, drop_last=loader.drop_last
        )
        if len(loader) == 0:
            raise ValueError(
                "train_data yields no batches (empty dataset, or drop_last with fewer "
                "samples than batch_size)"
            )
        return loader

    def _eval_loader(self, data: Any, what: str = "val_data") -> DataLoader | None:
        loader = as_dataloader(data, self.batch_size, what=what)
        if loader is None or self.strategy.world_size == 1:
            return loader
        return self.strategy.setup_dataloader(loader, shuffle=False, seed=0)

    # -- deprecated private names kept for code that reached into the Trainer -----------------
    def _trainer_state(self) -> dict[str, Any]:
        return checkpointing.capture_trainer_state(self)

    def _restore(self, resume: str | os.PathLike) -> None:
        checkpointing.restore(self, resume)

    def __repr__(self) -> str:
        return (
            f"Trainer(backend={self.backend.name!r}, strategy={self.strategy!r}, "
            f"precision={self.precision!r}, callbacks={[type(c).__name__ for c in self.callbacks]})"
        )


_NO_PAIR = (
    "validation gives it no (output, target) pair: use loss_fn with (inputs, target) "
    "batches, a dict batch with 'labels', or log it with self.log in validation_step"
)


# -- construction helpers ------------------------------------------------------------------


def _tracked_step(optimizer: torch.optim.Optimizer) -> Callable[..., Any]:
    """``optimizer.step`` marked as called, as an LR scheduler marks its optimizer's."""
    optimizer_ref = weakref.ref(optimizer)  # no reference cycle through the instance
    step = type(optimizer).step

    def tracked(*args: Any, **kwargs: Any) -> Any:
        opt = optimizer_ref()
        opt._opt_called = True
        return step(opt, *args, **kwargs)

    tracked._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
    return tracked


def _accumulation(accumulate_grad_batches: int, gradient_accumulation_steps: int | None) -> int:
    if gradient_accumulation_steps is not None:
        if accumulate_grad_batches not in (1, gradient_accumulation_steps):
            raise ValueError(
                f"accumulate_grad_batches={accumulate_grad_batches} and "
                f"gradient_accumulation_steps={gradient_accumulation_steps} disagree; pass "
                "only accumulate_grad_batches (gradient_accumulation_steps is its deprecated alias)"
            )
        warnings.warn(
            "gradient_accumulation_steps is deprecated; use accumulate_grad_batches",
            DeprecationWarning,
            stacklevel=3,
        )
        accumulate_grad_batches = gradient_accumulation_steps
    check_positive_int("accumulate_grad_batches", accumulate_grad_batches)
    return accumulate_grad_batches


def _build_optimizers(
    optimizer: Any, kwargs: Mapping[str, Any] | None, model: nn.Module, user_model: nn.Module
) -> list[torch.optim.Optimizer]:
    if optimizer is None and hasattr(user_model, "configure_optimizers"):
        if kwargs:
            raise ValueError(
                "optimizer_kwargs apply to an optimizer class; the model's "
                "configure_optimizers() builds its own optimizers"
            )
        optimizer = user_model.configure_optimizers()
        where = f"{type(user_model).__name__}.configure_optimizers()"
    else:
        where = "optimizer"
    if isinstance(optimizer, torch.optim.Optimizer) or not isinstance(optimizer, Sequence):
        if isinstance(optimizer, Mapping):
            raise TypeError(
                f"{where} returned a dict; return an optimizer or a list of optimizers "
                "(pass schedulers with scheduler=)"
            )
        return [resolve_optimizer(optimizer, kwargs, model)]
    if isinstance(optimizer, str):
        return [resolve_optimizer(optimizer, kwargs, model)]
    optimizers = list(optimizer)
    if not optimizers or not all(isinstance(o, torch.optim.Optimizer) for o in optimizers):
        kinds = ", ".join(type(o).__name__ for o in optimizers) or "nothing"
        raise TypeError(
            f"{where} must be an optimizer or a list of optimizer instances, got [{kinds}]"
        )
    if kwargs:
        raise ValueError("optimizer_kwargs only apply when optimizer is a class")
    seen: set[int] = set()
    for opt in optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                if id(p) in seen:
                    raise ValueError(
                        f"a parameter of shape {tuple(p.shape)} is in two of the optimizers "
                        f"from {where}; give each parameter to one optimizer"
                    )
                seen.add(id(p))
    return optimizers


def _attach_manual_optimization(model: nn.Module) -> None:
    """``self.optimizers()`` and ``self.manual_backward(loss)`` for manual optimization."""
    for name, fn in (
        ("optimizers", step_log.Optimizers()),
        ("manual_backward", step_log.ManualBackward()),
    ):
        if getattr(type(model), name, None) is None and name not in vars(model):
            object.__setattr__(model, name, fn)


def _announce_checkpointing(model: nn.Module) -> None:
    from deepseek.nn.activation_checkpointing import CheckpointWrapper

    names = [name for name, m in model.named_modules() if isinstance(m, CheckpointWrapper)]
    if names:
        shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
        _say(f"activation checkpointing wraps {len(names)} block(s): {shown}")


def _describe(path: Path) -> str:
    try:
        from deepseek.checkpoint import describe_checkpoint

        return describe_checkpoint(path)
    except Exception:  # noqa: BLE001 - a description must never break a run
        return str(path)


def _interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


def _say(message: str) -> None:
    """A one-line notice for the user (stderr, so it never mixes with program output)."""
    print(f"[deepseek] {message}", file=sys.stderr, flush=True)


class _sigint_stops:
    """While fitting in the main thread, the first SIGINT asks the loop to stop after the
    current step (the Trainer then saves a checkpoint); a second one interrupts at once."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.trainer._interrupted:
            signal.signal(signal.SIGINT, self.previous or signal.default_int_handler)
            raise KeyboardInterrupt
        self.trainer._interrupted = True
        _say("Ctrl-C: finishing the current step, then saving a checkpoint (Ctrl-C again to abort)")

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous not in (signal.SIG_IGN, None):
                self.previous = previous
                signal.signal(signal.SIGINT, self._handler)

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


class MixedPrecisionTrainer(Trainer):
    """The Trainer with mixed precision on by default.

    ``fp16_params={'enable': True, 'loss_scale': 128}`` selects fp16 autocast with a
    static loss scale (``'dynamic'``, the default, uses a grad scaler). On a backend
    without fast fp16 it warns once and uses bf16 when that is native, else fp32.

        >>> import torch
        >>> from deepseek.optim import MixedPrecisionTrainer
        >>> from torch.optim import AdamW
        >>> bert_model = torch.nn.Linear(8, 2)
        >>> trainer = MixedPrecisionTrainer(model=bert_model, optimizer=AdamW,
        ...     fp16_params={'enable': True, 'loss_scale': 128}, enable_progress_bar=False)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Any = None,
        *args: Any,
        fp16_params: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if "precision" not in kwargs:
            backend = backends.get(kwargs.get("backend", "auto"))
            precision, options = _mixed_precision_choice(backend, dict(fp16_params or {}))
            kwargs["precision"] = precision
            kwargs["precision_kwargs"] = {**options, **(kwargs.get("precision_kwargs") or {})}
        super().__init__(model, optimizer, *args, **kwargs)


def _mixed_precision_choice(
    backend: backends.Backend, fp16_params: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    unknown = set(fp16_params) - {"enable", "enabled", "loss_scale", "init_scale"}
    if unknown:
        raise ValueError(
            f"unknown fp16_params {sorted(unknown)}; accepted: enable, loss_scale, init_scale"
        )
    enable = fp16_params.get("enable", fp16_params.get("enabled", True))
    native = backend.native_autocast_dtypes()
    if not enable:
        return "bf16-mixed" if torch.bfloat16 in native else "fp32", {}
    if torch.float16 in native:
        options = {"loss_scale": fp16_params.get("loss_scale", "dynamic")}
        if "init_scale" in fp16_params:
            options["init_scale"] = fp16_params["init_scale"]
        return "fp16-mixed", options
    instead = "bf16-mixed (no loss scaling needed)" if torch.bfloat16 in native else "fp32"
    warnings.warn(
        f"fp16 mixed precision requested, but the {backend.name} backend has no fast fp16; "
        f"training with {instead} instead",
        stacklevel=3,
    )
    return ("bf16-mixed" if torch.bfloat16 in native else "fp32"), {}
