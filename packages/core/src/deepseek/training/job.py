"""A whole training job from a config: build, fit, plot, summarise (``deepseek train``)."""

from __future__ import annotations

import importlib
import inspect
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from deepseek.callbacks import CSVLogger, ModelCheckpoint
from deepseek.config import Component, Config, ConfigError
from deepseek.plugins.registry import registry
from deepseek.training.trainer import Trainer


def import_callable(target: str, path: str) -> Callable[..., Any]:
    """``"package.module:attr"`` -> the object (the user's own code, named in the config)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{path}: {target!r} is not 'module:callable'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{path}: cannot import module {module_name!r}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{path}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{path}: {target!r} is not callable")
    return obj


def call_with(fn: Callable[..., Any], kwargs: dict[str, Any], path: str) -> Any:
    """Call ``fn(**kwargs)``; unknown keyword names become a ConfigError naming the key."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        for key in kwargs:
            if key not in params:
                accepted = ", ".join(p for p in params if p != "self") or "(none)"
                raise ConfigError(
                    f"{path}.{key}: not accepted by {fn.__name__}; accepts: {accepted}"
                )
    return fn(**kwargs)


def build_model(spec: Component) -> torch.nn.Module:
    if ":" in spec.name:
        model = call_with(import_callable(spec.name, "model.name"), spec.kwargs, "model")
    else:
        model = call_with(registry("model").get(spec.name).factory, spec.kwargs, "model")
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model: {spec.name!r} built a {type(model).__name__}, not an nn.Module")
    return model


def build_loader(spec: Component, config: Config, *, train: bool, path: str) -> DataLoader:
    data = call_with(import_callable(spec.name, f"{path}.name"), spec.kwargs, path)
    if isinstance(data, DataLoader):
        return data
    if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise ConfigError(f"{path}: {spec.name!r} returned {type(data).__name__}, not a Dataset")
    return DataLoader(
        data,
        batch_size=config.data.batch_size,
        shuffle=train and config.data.shuffle,
        num_workers=config.data.num_workers,
    )


def build_loss(name: str | None) -> Callable[..., torch.Tensor] | None:
    if name is None:
        return None
    if ":" in name:
        return import_callable(name, "trainer.loss")
    fn = getattr(torch.nn.functional, name, None)
    if fn is None:
        raise ConfigError(
            f"trainer.loss: {name!r} is not a torch.nn.functional loss (e.g. cross_entropy, "
            "mse_loss) nor 'module:callable'"
        )
    return fn


def build_trainer(config: Config) -> Trainer:
    """Everything the config describes, wired into a Trainer (nothing is run)."""
    out = Path(config.output_dir)
    if config.seed is not None:
        torch.manual_seed(config.seed)  # model init is part of the reproducible run
    model = build_model(config.model)
    train_loader = build_loader(config.data.train, config, train=True, path="data.train")
    val_loader = (
        build_loader(config.data.val, config, train=False, path="data.val")
        if config.data.val is not None
        else None
    )
    optimizer_name = config.optimizer.name
    optimizer: Any = (
        import_callable(optimizer_name, "optimizer.name")
        if ":" in optimizer_name
        else optimizer_name
    )
    scheduler: Any = None
    scheduler_kwargs: dict[str, Any] = {}
    if config.scheduler is not None:
        scheduler = config.scheduler.name
        if ":" in scheduler:
            scheduler = import_callable(scheduler, "scheduler.name")
        scheduler_kwargs = config.scheduler.kwargs
    callbacks: list[Any] = []
    for i, cb in enumerate(config.callbacks):
        try:
            callbacks.append(registry("callback").get(cb.name).create(**cb.kwargs))
        except TypeError as exc:
            raise ConfigError(f"callbacks[{i}] ({cb.name}): {exc}") from None
    if not any(isinstance(cb, CSVLogger) for cb in callbacks):
        callbacks.append(CSVLogger(out))
    t = config.trainer
    return Trainer(
        model,
        optimizer,
        optimizer_kwargs=config.optimizer.kwargs,
        train_data=train_loader,
        val_data=val_loader,
        loss_fn=build_loss(t.loss),
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        backend=t.backend,
        strategy=t.strategy,
        precision=t.precision,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_norm=t.gradient_clip_norm,
        scheduler=scheduler,
        scheduler_kwargs=scheduler_kwargs,
        scheduler_interval=config.scheduler.interval if config.scheduler else "step",
        callbacks=callbacks,
        seed=config.seed,
        deterministic=t.deterministic,
        compile=t.compile,
        gradient_checkpointing=t.gradient_checkpointing,
        val_every_n_epochs=t.val_every_n_epochs,
        val_every_n_steps=t.val_every_n_steps,
        metrics=t.metrics,
        on_nan_loss=t.on_nan_loss,
        default_root_dir=out,
        enable_progress_bar=t.enable_progress_bar,
    )


def add_config_dir(config_dir: str | Path | None) -> None:
    """Make ``module:callable`` names resolve against the YAML file's own folder."""
    if config_dir is not None and str(config_dir) not in sys.path:
        sys.path.insert(0, str(config_dir))


def run_job(config: Config, config_dir: str | Path | None = None) -> dict[str, Any]:
    """Build and fit; write the curves plot; print and return the summary."""
    add_config_dir(config_dir)
    trainer = build_trainer(config)
    start = time.perf_counter()
    trainer.fit(resume=config.trainer.resume)
    elapsed = time.perf_counter() - start
    csv_logger = next(cb for cb in trainer.callbacks if isinstance(cb, CSVLogger))
    plot = (
        plot_curves(csv_logger.rows, Path(config.output_dir) / "curves.png")
        if config.plot
        else None
    )
    checkpoints = [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)]
    summary = {
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "seconds": round(elapsed, 1),
        **{k: round(v, 4) for k, v in trainer.metrics.items() if k.startswith("val_")},
        "best_checkpoint": checkpoints[0].best_model_path if checkpoints else None,
        "metrics_csv": str(csv_logger.path),
        "plot": str(plot) if plot else None,
    }
    if trainer.is_global_zero:
        print(format_summary(summary))
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    width = max(len(k) for k in summary)
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
