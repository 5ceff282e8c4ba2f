"""The Trainer: the training loop, and nothing the loop does not need.

It resolves names (backend, strategy, precision, callbacks) through the plugin
registries once, in ``__init__``; the loop itself calls plain objects.
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from deepseek import backends
from deepseek import checkpoint as ckpt
from deepseek.callbacks.base import Callback
from deepseek.callbacks.progress import ProgressBar
from deepseek.checkpoint.format import read_meta
from deepseek.training.data import EpochSampler, as_dataloader
from deepseek.training.precision import Precision
from deepseek.training.resolve import (
    NAN_POLICIES,
    check_positive_int,
    resolve_callbacks,
    resolve_metrics,
    resolve_optimizer,
    resolve_precision,
    resolve_scheduler,
    resolve_strategy,
)
from deepseek.training.strategy import Strategy
from deepseek.utils.batch import batch_size_of

LossFn = Callable[[Any, Any], torch.Tensor]


_STEP_METHODS = ("training_step", "validation_step", "predict_step")


class StepDispatch(nn.Module):
    """Routes ``model(batch, "training_step")`` to ``model.training_step(batch)`` and any
    other call to the model's forward, so that wrappers which act in ``forward`` (DDP's
    gradient sync, torch.compile) also see the step methods. ``state_dict`` keys and
    ``Strategy.unwrap`` see through it (the wrapped model is ``.module``)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self._register_state_dict_hook(_strip_module_prefix)
        self._register_load_state_dict_pre_hook(_add_module_prefix)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 2 and isinstance(args[1], str) and args[1] in _STEP_METHODS:
            return getattr(self.module, args[1])(args[0])
        return self.module(*args, **kwargs)


def _strip_module_prefix(module: nn.Module, state: dict, prefix: str, local: Any) -> None:
    for key in list(state):
        if key.startswith(prefix + "module."):
            state[prefix + key[len(prefix) + len("module.") :]] = state.pop(key)


def _add_module_prefix(state: dict, prefix: str, *args: Any) -> None:
    for key in list(state):
        if key.startswith(prefix) and not key.startswith(prefix + "module."):
            state[prefix + "module." + key[len(prefix) :]] = state.pop(key)


class Metrics(dict):
    """Latest value of each logged metric. Values are stored as 0-d tensors (no device
    sync on the hot path) and read back as Python floats."""

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        if isinstance(value, torch.Tensor):
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

    The loss comes from, in order: ``model.training_step(batch)``; ``loss_fn(output,
    target)`` where ``output = model(*batch[:-1])`` and ``target = batch[-1]``; or the
    model's own output (a scalar tensor, ``output.loss`` or ``output["loss"]``), with
    dict batches passed as ``model(**batch)``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | type[torch.optim.Optimizer] | None = None,
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
        if gradient_accumulation_steps is not None:
            accumulate_grad_batches = gradient_accumulation_steps
        check_positive_int("accumulate_grad_batches", accumulate_grad_batches)
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
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(
                f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}"
            )
        if gradient_clip_norm is not None and not gradient_clip_norm > 0:
            raise ValueError(f"gradient_clip_norm must be > 0, got {gradient_clip_norm!r}")

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

        self.strategy.setup(self.backend)
        if gradient_checkpointing not in (False, None):
            from deepseek.nn.activation_checkpointing import apply_activation_checkpointing

            model = apply_activation_checkpointing(model, gradient_checkpointing)
        if any(hasattr(model, step) for step in _STEP_METHODS):
            model = StepDispatch(model)
        self.model = self.strategy.setup_model(model)
        self.optimizer = self.strategy.setup_optimizer(
            resolve_optimizer(optimizer, optimizer_kwargs, self.model)
        )
        self.scheduler = resolve_scheduler(scheduler, scheduler_kwargs, self.optimizer)
        self.scheduler_interval = scheduler_interval
        if compile:
            from deepseek.compiler import compile as ds_compile

            options = dict(compile) if isinstance(compile, Mapping) else {}
            self.model = ds_compile(self.model, **options)

        self._user_model = self.strategy.unwrap(self.model)  # looked up once, used per step
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.loss_fn = loss_fn
        self.metric_fns = resolve_metrics(metrics)
        self.max_epochs = max_epochs if max_epochs is not None or max_steps else 1
        self.max_steps = max_steps
        self.accumulate_grad_batches = accumulate_grad_batches
        self.gradient_clip_norm = gradient_clip_norm
        self.val_every_n_epochs = val_every_n_epochs
        self.val_every_n_steps = val_every_n_steps
        self.on_nan_loss = on_nan_loss
        self.default_root_dir = Path(default_root_dir) if default_root_dir is not None else None
        self.train_data = train_data
        self.val_data = val_data

        # Progress: what a checkpoint records and a resume restores.
        self.current_epoch = 0
        self.global_step = 0
        self.batch_idx = 0  # micro-batches consumed in the current epoch
        self.optimizer_stepped = False  # whether the last micro-batch ended with a step
        self.should_stop = False
        self.nan_losses_skipped = 0
        self.metrics = Metrics()
        self.num_training_batches = 0
        self.stage: str | None = None
        self._data_seed = seed if seed is not None else int(torch.randint(0, 2**31, ()).item())
        self._epoch_done = False
        self._pending_rng: dict[str, Any] | None = None

    # -- public API ------------------------------------------------------------------------
    @property
    def is_global_zero(self) -> bool:
        return self.strategy.is_global_zero

    @property
    def unwrapped_model(self) -> nn.Module:
        """The user's module, inside any wrapper (DDP, compile, StepDispatch)."""
        return self._user_model

    def fit(
        self,
        train_data: Any = None,
        val_data: Any = None,
        resume: str | os.PathLike | None = None,
    ) -> None:
        """Train until ``max_epochs``/``max_steps`` or a callback sets ``should_stop``.

        ``resume="last"`` continues from the newest checkpoint written by a
        ``ModelCheckpoint`` (starting fresh, with a warning, when there is none);
        a path continues from that checkpoint, mid-epoch if it was saved mid-epoch.
        """
        if train_data is not None:
            self.train_data = train_data
        if val_data is not None:
            self.val_data = val_data
        train_loader = self._train_loader(self.train_data)
        val_loader = self._eval_loader(self.val_data)
        self.num_training_batches = len(train_loader)
        self._run_stage("fit", lambda: self._fit_loop(train_loader, val_loader, resume))

    def validate(self, val_data: Any = None) -> dict[str, float]:
        """Run the validation loop once and return its metrics (``val_loss``, ...)."""
        loader = self._eval_loader(val_data if val_data is not None else self.val_data)
        if loader is None:
            raise ValueError("validate() needs data: pass val_data here or to the Trainer")
        return self._run_stage("validate", lambda: self._validation_loop(loader))

    def predict(self, data: Any) -> Any:
        """Model outputs for every batch of ``data`` (concatenated when they are tensors)."""
        loader = self._eval_loader(data)
        if loader is None:
            raise ValueError("predict() needs data")
        return self._run_stage("predict", lambda: self._predict_loop(loader))

    def save_checkpoint(
        self, path: str | os.PathLike, weights_only: bool = False, **metadata: Any
    ) -> Path:
        """Write a checkpoint directory (atomically). ``weights_only=True`` stores just the
        model weights; otherwise everything an exact resume needs."""
        model_state = self.strategy.model_state_dict(self.model)
        meta = {
            "epoch": self.current_epoch,
            "global_step": self.global_step,
            "metrics": {k: v for k, v in self.metrics.as_floats().items() if _is_number(v)},
            **metadata,
        }
        trainer_state = None if weights_only else self._trainer_state()
        path = self.strategy.save_checkpoint(path, model_state, trainer_state, meta)
        for cb in self.callbacks:
            cb.on_save_checkpoint(self, str(path))
        return path

    # -- stages ----------------------------------------------------------------------------
    def _run_stage(self, stage: str, body: Callable[[], Any]) -> Any:
        self.stage = stage
        for cb in self.callbacks:
            cb.setup(self, stage)
        try:
            return body()
        except BaseException as exc:
            for cb in self.callbacks:
                cb.on_exception(self, exc)
            raise
        finally:
            for cb in self.callbacks:
                cb.teardown(self, stage)
            self.stage = None

    def _fit_loop(self, loader: DataLoader, val_loader: DataLoader | None, resume: Any) -> None:
        if resume is not None:
            self._restore(resume)
        self._call("on_fit_start")
        sampler: EpochSampler = loader.sampler  # type: ignore[assignment]
        while not self._finished():
            sampler.set_epoch(self.current_epoch)
            sampler.start_at(self.batch_idx * loader.batch_size)
            self._epoch_done = False
            iterator = iter(loader)
            if self._pending_rng is not None:
                # Restore RNG after creating the iterator, which draws a worker seed.
                ckpt.set_rng_state(self._pending_rng)
                self._pending_rng = None
            self._call("on_train_epoch_start")
            self.model.train()
            for batch in iterator:
                self._train_batch(batch, val_loader)
                if self.should_stop or self._max_steps_reached():
                    break
            if val_loader is not None and self._validate_this_epoch():
                self._validation_loop(val_loader)
            if self.scheduler is not None and self.scheduler_interval == "epoch":
                self._scheduler_step()
            self._epoch_done = True
            self._call("on_train_epoch_end")
            self.current_epoch += 1
            self.batch_idx = 0
        self._call("on_fit_end")

    def _train_batch(self, batch: Any, val_loader: DataLoader | None) -> None:
        batch_idx = self.batch_idx
        for cb in self.callbacks:
            cb.on_train_batch_start(self, batch, batch_idx)
        batch = self.strategy.batch_to_device(batch)
        k = self.accumulate_grad_batches
        last_in_epoch = batch_idx + 1 == self.num_training_batches
        boundary = (batch_idx + 1) % k == 0 or last_in_epoch
        # The last window of an epoch may be short: divide by its real size.
        window = (
            k
            if (batch_idx // k + 1) * k <= self.num_training_batches
            else (self.num_training_batches % k)
        )
        with self.strategy.no_backward_sync(self.model, enabled=not boundary):
            with self.precision.autocast():
                loss = self._training_loss(batch)
            skip = self._check_loss(loss)
            if not skip:
                self.precision.backward(loss / window if window > 1 else loss)
        self.batch_idx += 1
        self.optimizer_stepped = boundary
        detached = loss.detach()
        self.metrics["train_loss"] = detached
        if boundary:
            self._optimizer_step()
            every = self.val_every_n_steps
            if val_loader is not None and every and self.global_step % every == 0:
                self._validation_loop(val_loader)
        for cb in self.callbacks:
            cb.on_train_batch_end(self, {"loss": detached}, batch, batch_idx)

    def _optimizer_step(self) -> None:
        self.precision.unscale(self.optimizer)
        for cb in self.callbacks:
            cb.on_before_optimizer_step(self, self.optimizer)
        if self.gradient_clip_norm is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            norm = torch.nn.utils.clip_grad_norm_(params, self.gradient_clip_norm)
            self.metrics["grad_norm"] = norm.detach()
        self.precision.step(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if self.scheduler is not None and self.scheduler_interval == "step":
            self._scheduler_step()

    def _scheduler_step(self) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if "val_loss" not in self.metrics:
                raise ValueError(
                    "ReduceLROnPlateau needs val_loss: pass val_data and scheduler_interval='epoch'"
                )
            self.scheduler.step(self.metrics["val_loss"])
        else:
            self.scheduler.step()

    @torch.no_grad()
    def _validation_loop(self, loader: DataLoader) -> dict[str, float]:
        self._call("on_validation_start")
        was_training = self.model.training
        self.model.eval()
        totals: dict[str, torch.Tensor] = {}
        count = torch.zeros((), dtype=torch.float64)
        for batch in loader:
            batch = self.strategy.batch_to_device(batch)
            with self.precision.autocast():
                values = self._validation_values(batch)
            n = batch_size_of(batch)
            for name, value in values.items():
                value = value.detach().double().cpu() * n
                totals[name] = totals[name] + value if name in totals else value
            count += n
        count = self.strategy.reduce(count.to(self.strategy.device), "sum").cpu()
        results = {}
        for name, total in totals.items():
            summed = self.strategy.reduce(total.to(self.strategy.device), "sum").cpu()
            results[f"val_{name}"] = float(summed / count)
        self.metrics.update(results)
        self.model.train(was_training)
        self._call("on_validation_end")
        return results

    @torch.no_grad()
    def _predict_loop(self, loader: DataLoader) -> Any:
        self.model.eval()
        outputs = []
        for batch in loader:
            batch = self.strategy.batch_to_device(batch)
            with self.precision.autocast():
                if hasattr(self.unwrapped_model, "predict_step"):
                    out = self.model(batch, "predict_step")
                else:
                    inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
                    out = self._forward(inputs)
            outputs.append(out)
        if outputs and all(isinstance(o, torch.Tensor) for o in outputs):
            return torch.cat(outputs)
        return outputs

    # -- loss and metrics ------------------------------------------------------------------
    def _forward(self, inputs: Any) -> Any:
        if isinstance(inputs, Mapping):
            return self.model(**inputs)
        if isinstance(inputs, (list, tuple)):
            return self.model(*inputs)
        return self.model(inputs)

    def _split(self, batch: Any) -> tuple[Any, Any]:
        if isinstance(batch, (list, tuple)) and len(batch) >= 2:
            inputs = batch[0] if len(batch) == 2 else tuple(batch[:-1])
            return inputs, batch[-1]
        return batch, None

    def _training_loss(self, batch: Any) -> torch.Tensor:
        user_model = self.unwrapped_model
        if hasattr(user_model, "training_step"):
            # Through the wrappers' forward (StepDispatch), so DDP syncs the gradients.
            return _extract_loss(self.model(batch, "training_step"), "training_step")
        if self.loss_fn is not None:
            inputs, target = self._split(batch)
            if target is None:
                raise ValueError(
                    "loss_fn needs (inputs, target) batches, but a batch is a "
                    f"{type(batch).__name__}; return (inputs, target) from the dataset"
                )
            return self.loss_fn(self._forward(inputs), target)
        _check_forward_takes(user_model, batch)
        return _extract_loss(self._forward(batch), "the model's forward")

    def _validation_values(self, batch: Any) -> dict[str, torch.Tensor]:
        user_model = self.unwrapped_model
        if hasattr(user_model, "validation_step"):
            out = self.model(batch, "validation_step")
            if isinstance(out, Mapping):
                return {k.removeprefix("val_"): torch.as_tensor(v) for k, v in out.items()}
            return {"loss": _extract_loss(out, "validation_step")}
        if self.loss_fn is not None:
            inputs, target = self._split(batch)
            output = self._forward(inputs)
            values = {"loss": self.loss_fn(output, target)}
            for name, fn in self.metric_fns.items():
                values[name] = torch.as_tensor(fn(output, target))
            return values
        if hasattr(user_model, "training_step"):
            return {"loss": _extract_loss(self.model(batch, "training_step"), "training_step")}
        return {"loss": _extract_loss(self._forward(batch), "the model's forward")}

    def _check_loss(self, loss: torch.Tensor) -> bool:
        """True when this micro-batch must be skipped (non-finite loss, policy 'skip')."""
        if self.on_nan_loss is None:
            return False
        # .item() is the cheapest check on the CPU; on an accelerator both ways sync.
        finite = (
            math.isfinite(loss.item()) if loss.device.type == "cpu" else bool(torch.isfinite(loss))
        )
        if finite:
            return False
        where = f"at step {self.global_step} (epoch {self.current_epoch}, batch {self.batch_idx})"
        if self.on_nan_loss == "raise":
            raise FloatingPointError(
                f"the loss is {loss.item()} {where}. Lower the learning rate, clip "
                "gradients (gradient_clip_norm=1.0), check the data, or pass "
                "on_nan_loss='skip' to skip such batches"
            )
        self.nan_losses_skipped += 1
        warnings.warn(f"skipping a batch whose loss is {loss.item()} {where}", stacklevel=2)
        return True

    # -- data ------------------------------------------------------------------------------
    def _train_loader(self, data: Any) -> DataLoader:
        if data is None:
            raise ValueError("fit() needs training data: pass train_data to the Trainer or fit()")
        loader = as_dataloader(data, self.batch_size, what="train_data")
        shuffle = self.shuffle
        if isinstance(data, DataLoader):  # keep the user's choice of shuffling
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

    def _eval_loader(self, data: Any) -> DataLoader | None:
        loader = as_dataloader(data, self.batch_size, what="val_data")
        if loader is None or self.strategy.world_size == 1:
            return loader
        return self.strategy.setup_dataloader(loader, shuffle=False, seed=0)

    # -- checkpoint state --------------------------------------------------------------------
    def _trainer_state(self) -> dict[str, Any]:
        return {
            "progress": {
                "epoch": self.current_epoch,
                "global_step": self.global_step,
                "batch_idx": self.batch_idx,
                "epoch_done": self._epoch_done,
                "nan_losses_skipped": self.nan_losses_skipped,
                "data_seed": self._data_seed,
            },
            "optimizer": self.strategy.optimizer_state_dict(self.optimizer),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "precision": self.precision.state_dict(),
            "rng": ckpt.get_rng_state(),
            "callbacks": {cb.state_key: cb.state_dict() for cb in self.callbacks},
            "metrics": {k: v for k, v in self.metrics.as_floats().items() if _is_number(v)},
        }

    def _resolve_resume(self, resume: str | os.PathLike) -> Path | None:
        if str(resume) != "last":
            return Path(resume)
        roots = [Path(d) for cb in self.callbacks if (d := getattr(cb, "dirpath", None))]
        if self.default_root_dir is not None:
            roots.append(self.default_root_dir / "checkpoints")
        found = [p for root in roots if (p := ckpt.latest_checkpoint(root)) is not None]
        metas = {p: read_meta(p) for p in found}
        full = [p for p, meta in metas.items() if meta.get("kind") == "full"]
        if not full:
            warnings.warn(
                f"resume='last' found no full checkpoint under {[str(r) for r in roots]}; "
                "starting from scratch",
                stacklevel=3,
            )
            return None
        return max(full, key=lambda p: metas[p]["metadata"].get("global_step", -1))

    def _restore(self, resume: str | os.PathLike) -> None:
        path = self._resolve_resume(resume)
        if path is None:
            return
        checkpoint = self.strategy.load_checkpoint(path)
        if checkpoint.trainer_state is None:
            raise ValueError(
                f"{path} is a weights-only checkpoint: it has no optimizer or progress "
                "state, so training cannot resume from it. Load it with "
                "deepseek.checkpoint.load_weights(model, path), or save full checkpoints "
                "(ModelCheckpoint(save_weights_only=False))"
            )
        state = checkpoint.trainer_state
        self.strategy.load_model_state_dict(self.model, checkpoint.model_state)
        self.strategy.load_optimizer_state_dict(self.optimizer, state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.precision.load_state_dict(state.get("precision", {}))
        progress = state["progress"]
        self.global_step = progress["global_step"]
        self.nan_losses_skipped = progress.get("nan_losses_skipped", 0)
        self._data_seed = progress["data_seed"]
        if progress["epoch_done"]:
            self.current_epoch, self.batch_idx = progress["epoch"] + 1, 0
        else:
            self.current_epoch, self.batch_idx = progress["epoch"], progress["batch_idx"]
        self.metrics.update(state.get("metrics", {}))
        saved = state.get("callbacks", {})
        for cb in self.callbacks:
            if cb.state_key in saved:
                cb.load_state_dict(saved[cb.state_key])
        self._pending_rng = state["rng"]
        for cb in self.callbacks:
            cb.on_load_checkpoint(self, str(path))

    # -- helpers ---------------------------------------------------------------------------
    def _call(self, hook: str) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self)

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

    def __repr__(self) -> str:
        return (
            f"Trainer(backend={self.backend.name!r}, strategy={self.strategy!r}, "
            f"precision={self.precision!r}, callbacks={[type(c).__name__ for c in self.callbacks]})"
        )


# -- loss and batch helpers ------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_forward_takes(model: nn.Module, batch: Any) -> None:
    """A (inputs, target) batch fed to a one-input model means loss_fn was forgotten."""
    if not isinstance(batch, (list, tuple)):
        return
    params = inspect.signature(model.forward).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(batch) > len(positional):
        raise TypeError(
            f"{type(model).__name__}.forward takes {len(positional)} input(s) but a batch has "
            f"{len(batch)} elements, and there is no loss: pass loss_fn= to the Trainer "
            "(batches are then (inputs, target)), or define training_step(batch) on the model"
        )


def _extract_loss(output: Any, where: str) -> torch.Tensor:
    loss = output
    if isinstance(output, Mapping):
        loss = output.get("loss")
    elif not isinstance(output, torch.Tensor) and hasattr(output, "loss"):
        loss = output.loss
    if isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.is_floating_point():
        return loss.reshape(())
    shape = f" of shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else ""
    raise TypeError(
        f"{where} returned a {type(output).__name__}{shape}, not a loss. Pass loss_fn= "
        "to the Trainer, return a scalar loss (or an object with .loss / a dict with "
        "'loss'), or define training_step(batch) on the model"
    )


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
