"""A whole training job from a config: build, fit, plot, summarise (``deepseek train``).

The config's sections map onto the Trainer without a hand-written copy of its
arguments: every key of the ``trainer`` section is a Trainer keyword (the section is
derived from ``Trainer.__init__``), and each component's options are checked against
the signature of the class or function that builds it before anything is built.
"""

from __future__ import annotations

import functools
import inspect
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from deepseek.callbacks import Callback, CSVLogger, ModelCheckpoint
from deepseek.checkpoint.atomic import write_atomically
from deepseek.config import (
    AlgorithmConfig,
    Component,
    Config,
    ConfigError,
    dump_config,
    import_target,
)
from deepseek.config.options import check_options
from deepseek.config.targets import is_target
from deepseek.config.trainer_options import fit_parameters, trainer_parameters
from deepseek.plugins.registry import registry
from deepseek.plugins.specs import implementation
from deepseek.training.data import as_dataloader
from deepseek.training.trainer import Trainer
from deepseek.utils.seed import seed_everything, seed_worker

#: Trainer arguments the ``trainer`` section gives in a YAML form (converted below).
_CONVERTED = ("precision", "strategy", "metrics", "gradient_checkpointing")

#: torch.nn.functional names that are losses but do not end in ``_loss``.
_OTHER_LOSSES = (
    "cross_entropy",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
)


class Job:
    """Where a config's ``module:callable`` names are looked up, and whether safely."""

    def __init__(
        self,
        config: Config | None = None,
        config_dir: str | os.PathLike | None = None,
        *,
        safe: bool | None = None,
    ) -> None:
        self.config = config
        source = getattr(config, "source_dir", None)
        self.config_dir = Path(config_dir) if config_dir is not None else source
        self.safe = bool(getattr(config, "safe", False)) if safe is None else safe

    def target(self, name: str, path: str) -> Any:
        return import_target(name, path, config_dir=self.config_dir, safe=self.safe)

    def callable_target(self, name: str, path: str) -> Callable[..., Any]:
        obj = self.target(name, path)
        if not callable(obj):
            raise ConfigError(
                f"{path}: {name!r} is a {type(obj).__name__}, not a class or function"
            )
        return obj


# -- components ----------------------------------------------------------------------------


def build_model(spec: Component, job: Job | None = None) -> torch.nn.Module:
    job = job or Job()
    if is_target(spec.name):
        factory = job.callable_target(spec.name, "model.name")
    else:
        factory = _registry_get("model", spec.name, "model.name")
    model = factory(**check_options(factory, spec.kwargs, "model"))
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model: {spec.name!r} built a {type(model).__name__}, not an nn.Module")
    return model


def _registry_get(kind: str, name: str, path: str) -> Callable[..., Any]:
    """The registry record's factory, with an error that names the key path."""
    reg = registry(kind)
    if name in reg:
        spec = reg.get(name)
        return _signature_of(spec)
    known = reg.names()
    from deepseek.plugins.registry import PLURAL

    try:
        reg.get(name)
    except LookupError as exc:
        message = str(exc)
    else:  # pragma: no cover - the name appeared meanwhile
        message = ""
    if not known:
        # Say plainly that nothing is installed; a suggestion would be misleading.
        install = message.split(": pip install ")[-1] if "pip install" in message else None
        fix = (
            f"pip install {install}"
            if install
            else f"install a package that provides {PLURAL[kind]} (e.g. deepseek-nlp, "
            "deepseek-vision) or name your own as 'module:callable'"
        )
        raise ConfigError(
            f"{path}: unknown {kind} {name!r}: no {PLURAL[kind]} are installed; {fix}"
        )
    raise ConfigError(f"{path}: {message} Or name your own as 'module:callable'.")


def _signature_of(spec: Any) -> Callable[..., Any]:
    """The record's factory, with the signature of what it builds (for option checks)."""
    impl = implementation(spec)
    factory = spec.factory

    @functools.wraps(impl)
    def build(*args: Any, **kwargs: Any) -> Any:
        return factory(*args, **kwargs)

    return build


def build_dataset(spec: Component, job: Job, path: str) -> Any:
    factory = job.callable_target(spec.name, f"{path}.name")
    data = factory(**check_options(factory, spec.kwargs, path))
    if isinstance(data, IterableDataset) or (
        isinstance(data, DataLoader) and isinstance(data.dataset, IterableDataset)
    ):
        raise ConfigError(
            f"{path}: {spec.name!r} returned an IterableDataset; the Trainer needs a map-style "
            "Dataset (__len__ and __getitem__) to control the data order for exact resume"
        )
    return data


def build_loader(
    spec: Component, config: Config, *, train: bool, path: str, job: Job | None = None
) -> DataLoader:
    """The dataset a config names, batched: ``as_dataloader`` does the checks; shuffling,
    workers and worker seeding come from the ``data`` section."""
    job = job or Job(config)
    data = build_dataset(spec, job, path)
    try:
        loader = as_dataloader(data, config.data.batch_size, what=path)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if isinstance(data, DataLoader):
        return loader
    return DataLoader(
        loader.dataset,
        batch_size=config.data.batch_size,
        shuffle=train and config.data.shuffle,
        num_workers=config.data.num_workers,
        worker_init_fn=seed_worker if config.data.num_workers else None,
    )


def build_loss(spec: Component | str | None, job: Job | None = None) -> Callable[..., Any] | None:
    """``cross_entropy`` / ``{name: cross_entropy, label_smoothing: 0.1}`` (a
    torch.nn.functional loss), ``CrossEntropyLoss`` (a torch.nn loss class) or
    ``module:callable``."""
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = Component(spec)
    job = job or Job()
    name, options = spec.name, spec.kwargs
    if is_target(name):
        fn = job.callable_target(name, "trainer.loss.name")
        if inspect.isclass(fn):
            return fn(**check_options(fn, options, "trainer.loss"))
        return _bind(fn, options, "trainer.loss", skip=())
    functional = torch.nn.functional
    cls = getattr(torch.nn, name, None)
    if inspect.isclass(cls) and issubclass(cls, torch.nn.modules.loss._Loss):
        return cls(**check_options(cls, options, "trainer.loss"))
    if name in loss_names():
        return _bind(getattr(functional, name), options, "trainer.loss", skip=("input", "target"))
    what = (
        "a torch.nn.functional function but not a loss"
        if callable(getattr(functional, name, None))
        else "not a loss name"
    )
    raise ConfigError(
        f"trainer.loss: {name!r} is {what}; use one of {', '.join(loss_names())}, a torch.nn "
        "loss class (CrossEntropyLoss), or 'module:callable'"
    )


def loss_names() -> list[str]:
    functional = torch.nn.functional
    return sorted(
        n
        for n in dir(functional)
        if not n.startswith("_")
        and callable(getattr(functional, n))
        and (n.endswith("_loss") or n in _OTHER_LOSSES)
    )


def _bind(fn: Callable[..., Any], options: dict[str, Any], path: str, skip: tuple) -> Callable:
    if not options:
        return fn
    return functools.partial(fn, **check_options(fn, options, path, skip=skip))


def build_optimizer(spec: Component, job: Job) -> tuple[Any, dict[str, Any]]:
    """The optimizer class (torch.optim name or target) and its checked options."""
    if is_target(spec.name):
        cls = job.callable_target(spec.name, "optimizer.name")
    else:
        cls = _torch_optimizer(spec.name)
    return cls, check_options(cls, spec.kwargs, "optimizer", skip=("params",))


def _torch_optimizer(name: str) -> type:
    optim = torch.optim
    known = sorted(
        n
        for n in dir(optim)
        if inspect.isclass(getattr(optim, n))
        and issubclass(getattr(optim, n), optim.Optimizer)
        and n != "Optimizer"
    )
    match = next((n for n in known if n.lower() == name.lower()), None)
    if match is None:
        import difflib

        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"optimizer.name: unknown optimizer {name!r}.{hint} torch.optim has: "
            f"{', '.join(known)}; or name your own as 'module:callable'"
        )
    return getattr(optim, match)


def build_scheduler(spec: Any, job: Job) -> tuple[Any, dict[str, Any]]:
    if spec is None:
        return None, {}
    if is_target(spec.name):
        factory = job.callable_target(spec.name, "scheduler.name")
    else:
        factory = _torch_scheduler(spec.name)
    return factory, check_options(factory, spec.kwargs, "scheduler", skip=("optimizer",))


def scheduler_names() -> list[str]:
    sched = torch.optim.lr_scheduler
    bases = (sched.LRScheduler, sched.ReduceLROnPlateau)
    abstract = {"LRScheduler", "_LRScheduler"}
    return sorted(
        n
        for n in dir(sched)
        if not n.startswith("_")
        and n not in abstract
        and inspect.isclass(getattr(sched, n))
        and issubclass(getattr(sched, n), bases)
    )


def _torch_scheduler(name: str) -> Any:
    names = scheduler_names()
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        why = " (a base class, not a schedule)" if name in ("LRScheduler", "_LRScheduler") else ""
        raise ConfigError(
            f"scheduler.name: {name!r} is not a torch.optim.lr_scheduler schedule{why}.{hint} "
            f"Use one of {', '.join(names)}, or 'module:callable'"
        )
    return getattr(torch.optim.lr_scheduler, name)


def build_callbacks(specs: list[Component], job: Job) -> list[Callback]:
    callbacks = []
    for i, cb in enumerate(specs):
        path = f"callbacks[{i}]"
        if is_target(cb.name):
            factory = job.callable_target(cb.name, f"{path}.name")
        else:
            factory = _registry_get("callback", cb.name, f"{path}.name")
        try:
            callbacks.append(factory(**check_options(factory, cb.kwargs, path)))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"{path} ({cb.name}): {exc}") from None
    return callbacks


def build_strategy(spec: Component, job: Job) -> Any:
    """A name stays a name (the Trainer resolves it); options build the object here."""
    if not spec.kwargs and not is_target(spec.name):
        return spec.name
    if is_target(spec.name):
        factory = job.callable_target(spec.name, "trainer.strategy.name")
    else:
        factory = _registry_get("strategy", spec.name, "trainer.strategy.name")
    return factory(**check_options(factory, spec.kwargs, "trainer.strategy"))


def precision_arguments(spec: Component, job: Job) -> dict[str, Any]:
    """``precision`` + ``precision_kwargs`` for the Trainer, options checked against the
    precision class (the backend is the Trainer's to pass)."""
    if is_target(spec.name):
        cls = job.callable_target(spec.name, "trainer.precision.name")
        return {"precision": cls(**check_options(cls, spec.kwargs, "trainer.precision"))}
    options = dict(spec.kwargs)
    name = spec.name.strip().lower()
    from deepseek.training.resolve import PRECISION_ALIASES

    name = PRECISION_ALIASES.get(name, name)
    if name != "auto":
        factory = _registry_get("precision", name, "trainer.precision.name")
        options = check_options(factory, options, "trainer.precision", skip=("backend",))
    return {"precision": spec.name, "precision_kwargs": options or None}


def gradient_checkpointing_policy(value: Any) -> Any:
    """The YAML forms of ``trainer.gradient_checkpointing`` as the Trainer takes them."""
    if value in (False, None) or value is True or isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lower() in ("selective", "full"):
        return {"every_n": 1, "selective": value.strip().lower() == "selective"}
    from deepseek.nn.activation_checkpointing import ActivationCheckpointPolicy

    if isinstance(value, dict):
        options = check_options(ActivationCheckpointPolicy, value, "trainer.gradient_checkpointing",
                                skip=("predicate",))  # fmt: skip
        try:
            return ActivationCheckpointPolicy(**options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"trainer.gradient_checkpointing: {exc}") from None
    if isinstance(value, list):
        return ActivationCheckpointPolicy(module_types=tuple(value))
    return value  # a name pattern


def build_metrics_for(specs: Any, job: Job) -> Any:
    if not specs:
        return None
    from deepseek.metrics import build_metrics

    try:
        return build_metrics(
            specs, config_dir=job.config_dir, safe=job.safe, path="trainer.metrics"
        )
    except ConfigError:
        raise
    except (TypeError, ValueError, LookupError) as exc:
        raise ConfigError(str(exc)) from None


def build_algorithms(specs: list[AlgorithmConfig], job: Job) -> list[tuple[AlgorithmConfig, Any]]:
    built = []
    for i, algo in enumerate(specs):
        path = f"algorithms[{i}]"
        if is_target(algo.name):
            factory = job.callable_target(algo.name, f"{path}.name")
        else:
            factory = _registry_get("algorithm", algo.name, f"{path}.name")
        obj = factory(**check_options(factory, algo.kwargs, path))
        if not callable(getattr(obj, "apply", None)):
            raise ConfigError(
                f"{path}: {algo.name!r} built a {type(obj).__name__} with no apply(model)"
            )
        built.append((algo, obj))
    return built


def apply_algorithm(algorithm: Any, model: torch.nn.Module, path: str) -> torch.nn.Module:
    result = algorithm.apply(model)
    if result is None:
        return model
    if not isinstance(result, torch.nn.Module):
        raise ConfigError(f"{path}: apply() returned a {type(result).__name__}, not a model")
    return result


class ApplyAlgorithm(Callback):
    """Applies a model algorithm at the start of a given epoch (``algorithms: [{name: ...,
    at: 3}]``). The algorithm changes the model in place; when it replaces parameters
    (physical pruning, new layers) the optimizer is rebuilt over the new ones
    (:meth:`Trainer.rebuild_optimizer`, single-process runs)."""

    def __init__(self, algorithm: Any, epoch: int, path: str) -> None:
        self.algorithm, self.epoch, self.path = algorithm, epoch, path
        self.applied = False

    def on_train_epoch_start(self, trainer: Any) -> None:
        if self.applied or trainer.current_epoch != self.epoch:
            return
        model = trainer.unwrapped_model
        before = [id(p) for p in model.parameters()]
        if trainer.strategy.world_size == 1:
            with trainer.rebuild_optimizer():
                result = apply_algorithm(self.algorithm, model, self.path)
        else:
            result = apply_algorithm(self.algorithm, model, self.path)
            if [id(p) for p in model.parameters()] != before:
                raise ConfigError(
                    f"{self.path}: at epoch {self.epoch} the algorithm replaced parameters, "
                    "which a distributed run cannot follow (its wrapper holds the old "
                    "ones); use at: start"
                )
        if result is not model:
            raise ConfigError(
                f"{self.path}: at epoch {self.epoch} the algorithm must change the model in "
                "place, but apply() returned a new model; use at: start"
            )
        self.applied = True

    def state_dict(self) -> dict[str, Any]:
        return {"applied": self.applied}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.applied = bool(state.get("applied", False))


# -- the job -------------------------------------------------------------------------------


def check_output_dir(path: str | os.PathLike) -> Path:
    """Create ``output_dir`` and prove it writable before any training happens."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"output_dir: cannot write to {out} ({exc.strerror or exc}); choose a writable "
            "folder with --set output_dir=PATH"
        ) from None
    return out


def save_resolved_config(config: Config, out: Path) -> Path:
    """Write ``config.yaml`` (every default filled in) into the run's folder, atomically."""
    text = dump_config(config)
    return write_atomically(out / "config.yaml", lambda tmp: tmp.write_text(text, "utf-8"))


def build_trainer(config: Config, config_dir: str | os.PathLike | None = None) -> Trainer:
    """Everything the config describes, wired into a Trainer (nothing is run).

    Every component is resolved and its options checked first; then the run is seeded
    (``seed_everything``) and the model, data and Trainer are built.
    """
    job = Job(config, config_dir)
    t = config.trainer
    out = check_output_dir(config.output_dir)

    optimizer, optimizer_kwargs = build_optimizer(config.optimizer, job)
    scheduler, scheduler_kwargs = build_scheduler(config.scheduler, job)
    loss_fn = build_loss(t.loss, job)
    metrics = build_metrics_for(t.metrics, job)
    precision = precision_arguments(t.precision, job)
    strategy_spec = getattr(config.distributed, "strategy_spec", None)
    if callable(strategy_spec):  # a registered distributed section may choose the strategy
        name, strategy_options = strategy_spec(t.strategy)
        t.strategy = Component(name, dict(strategy_options))
    strategy = build_strategy(t.strategy, job)
    checkpointing = gradient_checkpointing_policy(t.gradient_checkpointing)
    callbacks = build_callbacks(config.callbacks, job)
    algorithms = build_algorithms(config.algorithms, job)

    if config.seed is not None:
        seed_everything(config.seed)  # model init and data are part of the reproducible run
    model = build_model(config.model, job)
    for i, (spec, algo) in enumerate(algorithms):
        if spec.at == "start":
            model = apply_algorithm(algo, model, f"algorithms[{i}]")
        else:
            callbacks.append(ApplyAlgorithm(algo, int(spec.at), f"algorithms[{i}]"))
    train_loader = build_loader(config.data.train, config, train=True, path="data.train", job=job)
    val_loader = (
        build_loader(config.data.val, config, train=False, path="data.val", job=job)
        if config.data.val is not None
        else None
    )
    if not any(isinstance(cb, CSVLogger) for cb in callbacks):
        callbacks.append(CSVLogger(out))

    # Every other trainer key is a Trainer keyword of the same name (derived schema).
    options = {
        name: getattr(t, name)
        for name in trainer_parameters()
        if name not in _CONVERTED and hasattr(t, name)
    }
    options.update(precision)
    options.update(strategy=strategy, metrics=metrics, gradient_checkpointing=checkpointing)
    try:
        return Trainer(
            model,
            optimizer,
            optimizer_kwargs=optimizer_kwargs,
            train_data=train_loader,
            val_data=val_loader,
            loss_fn=loss_fn,
            scheduler=scheduler,
            scheduler_kwargs=scheduler_kwargs,
            scheduler_interval=config.scheduler.interval if config.scheduler else "step",
            callbacks=callbacks,
            seed=config.seed,
            default_root_dir=out,
            **options,
        )
    except ConfigError:
        raise
    except (TypeError, ValueError, LookupError) as exc:
        raise ConfigError(f"trainer: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, KeyError) and text.startswith("'"):
        text = text.strip("'")
    return text.splitlines()[0] if text else type(exc).__name__


def fit_options(config: Config) -> dict[str, Any]:
    """The ``trainer`` keys that are ``Trainer.fit`` arguments (``resume``, ...)."""
    return {
        name: getattr(config.trainer, name)
        for name in fit_parameters()
        if hasattr(config.trainer, name)
    }


def _is_global_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def run_job(config: Config, config_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Build and fit; save the resolved config and the curves plot; print and return
    the summary."""
    trainer = build_trainer(config, config_dir)
    out = Path(config.output_dir)
    if _is_global_zero():
        save_resolved_config(config, out)
    start = time.perf_counter()
    trainer.fit(**fit_options(config))
    elapsed = time.perf_counter() - start
    csv_logger = next(cb for cb in trainer.callbacks if isinstance(cb, CSVLogger))
    plot = plot_curves(csv_logger.rows, out / "curves.png") if config.plot else None
    checkpoints = [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)]
    summary = {
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "seconds": round(elapsed, 1),
        **{k: round(v, 4) for k, v in trainer.metrics.items() if k.startswith("val_") and _num(v)},
        "best_checkpoint": checkpoints[0].best_model_path if checkpoints else None,
        "metrics_csv": str(csv_logger.path),
        "config": str(out / "config.yaml"),
        "plot": str(plot) if plot else None,
    }
    if trainer.is_global_zero:
        print(format_summary(summary))
    return summary


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def resolve_checkpoint(config: Config, which: str) -> Path:
    """``best`` / ``last`` / a path -> the checkpoint folder (for validate/predict)."""
    root = Path(config.output_dir) / "checkpoints"
    try:
        from deepseek.checkpoint import resolve_checkpoint_path  # safety's, when present
    except ImportError:
        resolve_checkpoint_path = None
    if resolve_checkpoint_path is not None:
        try:
            return Path(resolve_checkpoint_path(root, which))
        except FileNotFoundError as exc:
            raise ConfigError(f"--ckpt {which}: {_first_line(exc)}") from None
    return _resolve_checkpoint_fallback(root, which, config)


def _resolve_checkpoint_fallback(root: Path, which: str, config: Config) -> Path:
    from deepseek.checkpoint import latest_checkpoint
    from deepseek.checkpoint.format import read_meta

    if which not in ("best", "last"):
        path = Path(which)
        if not path.is_dir():
            raise ConfigError(
                f"--ckpt: {path} is not a checkpoint folder; pass best, last or a checkpoint"
            )
        return path
    last = root / "last" if (root / "last").is_dir() else latest_checkpoint(root)
    if last is None:
        raise ConfigError(
            f"--ckpt {which}: no checkpoint under {root}; train first (deepseek train) with a "
            "model_checkpoint callback, or pass --ckpt PATH"
        )
    if which == "last":
        return Path(last)
    # best: the config's model_checkpoint monitor, scored from each checkpoint's metadata
    monitor, mode = None, "auto"
    for cb in config.callbacks:
        if cb.name == "model_checkpoint" and cb.kwargs.get("monitor"):
            monitor, mode = cb.kwargs["monitor"], cb.kwargs.get("mode", "auto")
    if monitor is None:
        raise ConfigError(
            f"--ckpt best: the config's model_checkpoint has no monitor, so no checkpoint under "
            f"{root} is 'best'; use --ckpt last or a path"
        )
    if mode == "auto":
        higher = ("acc", "f1", "auc", "auroc", "precision", "recall", "iou", "dice")
        mode = "max" if any(k in monitor.lower() for k in higher) else "min"
    scored = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "last"):
        try:
            value = read_meta(folder)["metadata"]["metrics"].get(monitor)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(value, (int, float)):
            scored.append((value if mode == "max" else -value, folder))
    if not scored:
        raise ConfigError(f"--ckpt best: no checkpoint under {root} recorded {monitor!r}")
    return max(scored, key=lambda item: item[0])[1]


def run_evaluation(config: Config, stage: str, ckpt: str, config_dir: Any = None) -> Any:
    """``deepseek validate`` / ``deepseek predict``: the config's model with a
    checkpoint's weights on the validation data."""
    from deepseek.checkpoint import load_weights

    config.trainer.resume = None
    config.trainer.enable_progress_bar = False
    path = resolve_checkpoint(config, ckpt)
    config.callbacks = [cb for cb in config.callbacks if cb.name not in ("model_checkpoint",)]
    trainer = build_trainer(config, config_dir)
    load_weights(trainer.unwrapped_model, path)
    if trainer.val_data is None:
        raise ConfigError(f"data.val: `deepseek {stage}` needs validation data; add data.val")
    print(f"{stage} with weights from {path}")
    if stage == "validate":
        results = trainer.validate()
        if trainer.is_global_zero:
            print(format_summary({k: round(v, 4) for k, v in results.items()}))
        return results
    predictions = trainer.predict(trainer.val_data)
    out = Path(config.output_dir) / "predictions.pt"
    if trainer.is_global_zero:
        torch.save(predictions, out)
        print(f"predictions for {len(trainer.val_data.dataset)} samples -> {out}")
    return predictions


def format_summary(summary: dict[str, Any]) -> str:
    width = max((len(k) for k in summary), default=6)
    lines = ["", "| " + "result".ljust(width) + " | value", "|" + "-" * (width + 2) + "|------"]
    lines += [f"| {k.ljust(width)} | {v}" for k, v in summary.items()]
    return "\n".join(lines)


def plot_curves(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Loss (train and val) and every other validation metric against the step."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'deepseek-core[plot]')")
        return None

    def series(key: str) -> tuple[list[float], list[float]]:
        points = [(float(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        return [p[0] for p in points], [p[1] for p in points]

    keys = {k for r in rows for k in r}
    extra = sorted(k for k in keys if k.startswith("val_") and k != "val_loss")
    fig, axes = plt.subplots(1, 1 + bool(extra), figsize=(10 if extra else 5, 4), squeeze=False)
    ax = axes[0][0]
    for key in ("train_loss", "val_loss"):
        if key in keys:
            ax.plot(*series(key), label=key, marker="o" if key == "val_loss" else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    if extra:
        for key in extra:
            axes[0][1].plot(*series(key), label=key, marker="o")
        axes[0][1].set_xlabel("step")
        axes[0][1].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- deprecated names (one release) ----------------------------------------------------------


def import_callable(target: str, path: str) -> Callable[..., Any]:
    """Deprecated: use ``deepseek.config.import_target``."""
    warnings.warn(
        "deepseek.training.job.import_callable is deprecated; use deepseek.config.import_target",
        DeprecationWarning,
        stacklevel=2,
    )
    obj = import_target(target, path)
    if not callable(obj):
        raise ConfigError(f"{path}: {target!r} is not callable")
    return obj


def call_with(fn: Callable[..., Any], kwargs: dict[str, Any], path: str) -> Any:
    """Deprecated: use ``deepseek.config.options.check_options`` and call."""
    warnings.warn(
        "deepseek.training.job.call_with is deprecated; use "
        "deepseek.config.options.check_options(fn, kwargs, path) and call fn",
        DeprecationWarning,
        stacklevel=2,
    )
    return fn(**check_options(fn, kwargs, path))


def add_config_dir(config_dir: str | os.PathLike | None) -> None:
    """Deprecated: modules are now loaded from the config's folder by file location
    (pass ``config_dir`` to ``build_trainer``/``run_job``); this only appends it to
    ``sys.path`` (never first, so it cannot shadow installed modules)."""
    warnings.warn(
        "deepseek.training.job.add_config_dir is deprecated; pass config_dir to build_trainer",
        DeprecationWarning,
        stacklevel=2,
    )
    import sys

    if config_dir is not None and str(config_dir) not in sys.path:
        sys.path.append(str(config_dir))
