"""``deepseek new-plugin NAME``: write a working plugin distribution.

The result is a separately installable distribution ``deepseek-NAME`` with its own
top-level package ``deepseek_NAME`` (third-party plugins never live in ``deepseek.*``),
built by hatchling and registered through the ``deepseek`` entry point::

    deepseek-NAME/
        pyproject.toml            [project.entry-points.deepseek] NAME = "deepseek_NAME.plugin"
        README.md
        src/deepseek_NAME/__init__.py
        src/deepseek_NAME/plugin.py    the @hookimpl functions (factories are deferred)
        src/deepseek_NAME/<kind>.py    one stub per chosen kind, every hook documented
        examples/NAME.yaml             a job config that uses what the plugin registers
        examples/NAME_job.py           the job's model and data (module:callable names)
        tests/test_NAME.py             passes as generated: pip install -e . && pytest

The stubs subclass the public base classes and override every hook method they have,
each calling the base implementation, so the generated plugin works unchanged and an
author edits only what they need. Hook lists are read from the base classes when the
plugin is generated, so they match the installed deepseek-core.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     written = generate("jsonl", ["callback"], tmp)
    ...     sorted(p.relative_to(tmp).as_posix() for p in written)[:2]
    ['deepseek-jsonl/README.md', 'deepseek-jsonl/examples/jsonl.yaml']
"""

from __future__ import annotations

import argparse
import inspect
import keyword
import re
import sys
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from deepseek import __version__

KINDS = ("callback", "precision", "strategy", "backend", "algorithm", "model", "metric", "cli")
DEFAULT_KINDS = ("callback",)
_NAME = re.compile(r"[a-z][a-z0-9]*(?:[_-][a-z0-9]+)*")


class NewPluginError(ValueError):
    """A bad ``deepseek new-plugin`` request (name, kinds, target directory)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the plugin's name, e.g. 'jsonl' -> deepseek-jsonl")
    parser.add_argument(
        "--kind",
        default=",".join(DEFAULT_KINDS),
        help=f"what it provides, comma-separated: {', '.join(KINDS)} (default: callback)",
    )
    parser.add_argument("--dir", default=".", help="where to create deepseek-NAME/ (default: here)")
    parser.add_argument(
        "--force", action="store_true", help="write into an existing, non-empty directory"
    )


def run(args: argparse.Namespace) -> int:
    try:
        kinds = parse_kinds(args.kind)
        written = generate(args.name, kinds, Path(args.dir), force=args.force)
    except NewPluginError as exc:
        print(f"deepseek new-plugin: error: {exc}", file=sys.stderr)
        return 2
    root = written[0].parent
    print(f"wrote {len(written)} files to {root}")
    print(f"next:  cd {root} && pip install -e . && python -m pytest -q tests")
    print(f"check: deepseek plugins --check {normalize(args.name)}")
    return 0


def normalize(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def parse_kinds(value: str | Iterable[str]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    kinds = [k.strip().lower() for k in items if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        import difflib

        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, KINDS, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise NewPluginError(f"unknown kind {', '.join(hints)}; choose from {', '.join(KINDS)}")
    if not kinds:
        raise NewPluginError(f"--kind is empty; choose from {', '.join(KINDS)}")
    return list(dict.fromkeys(kinds))


def _check_name(name: str) -> str:
    from deepseek.plugins.first_party import FIRST_PARTY

    key = normalize(name)
    if not _NAME.fullmatch(key):
        raise NewPluginError(
            f"plugin name {name!r} must be lowercase letters and digits, words joined by "
            "'-' or '_', starting with a letter (e.g. 'jsonl', 'my-accel')"
        )
    taken = {d.plugin for d in FIRST_PARTY} | {
        d.distribution.removeprefix("deepseek-") for d in FIRST_PARTY
    }
    if key in taken or key in ("framework", "plugins", "testing"):
        raise NewPluginError(f"{name!r} is a first-party package's name; pick another")
    module = "deepseek_" + key.replace("-", "_")
    if keyword.iskeyword(module):
        raise NewPluginError(f"{name!r} gives the module name {module!r}, a Python keyword")
    return key


def generate(
    name: str, kinds: Sequence[str], directory: str | Path = ".", *, force: bool = False
) -> list[Path]:
    """Write the distribution ``deepseek-<name>`` under ``directory``; returns the files
    (the first is ``pyproject.toml``)."""
    key = _check_name(name)
    kinds = parse_kinds(kinds)
    context = _Context(key, kinds)
    root = Path(directory) / context.dist
    if root.exists() and any(root.iterdir()) and not force:
        raise NewPluginError(f"{root} exists and is not empty; pass --force to write into it")
    files: dict[str, str] = {
        "pyproject.toml": context.pyproject(),
        "README.md": context.readme(),
        f"src/{context.package}/__init__.py": context.package_init(),
        f"src/{context.package}/plugin.py": context.plugin_module(),
        f"examples/{key}.yaml": context.example_yaml(),
        f"examples/{context.job_module}.py": context.example_job(),
        # Named after the plugin: pytest needs distinct test-file names when several
        # plugins' tests run in one session (no __init__.py in tests/).
        f"tests/test_{context.package.removeprefix('deepseek_')}.py": context.tests(),
    }
    for kind in kinds:
        files[f"src/{context.package}/{kind}.py"] = context.stub(kind)
    written = []
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written


# -- templates ------------------------------------------------------------------------------

# kind -> (spec class, hook, stub class suffix, base class import, base class name)
SPECS = {
    "callback": ("CallbackSpec", "deepseek_callbacks", "Callback"),
    "precision": ("PrecisionSpec", "deepseek_precisions", "Precision"),
    "strategy": ("StrategySpec", "deepseek_strategies", "Strategy"),
    "backend": ("BackendSpec", "deepseek_backends", "Backend"),
    "algorithm": ("AlgorithmSpec", "deepseek_algorithms", "Algorithm"),
    "model": ("ModelSpec", "deepseek_models", "Model"),
    "metric": ("MetricSpec", "deepseek_metrics", "Metric"),
}

BASES = {
    "callback": ("deepseek.callbacks", "Callback"),
    "precision": ("deepseek.training", "Precision"),
    "strategy": ("deepseek.training", "SingleDeviceStrategy"),
    "backend": ("deepseek.backends.cpu", "CPUBackend"),
    "metric": ("deepseek.metrics", "Metric"),
}


def _camel(key: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[-_]", key))


def _first_line(obj: Any, fallback: str) -> str:
    doc = inspect.getdoc(obj) or ""
    line = doc.strip().split("\n\n")[0].replace("\n", " ").strip()
    return line or fallback


def _overridable(base: type) -> list[tuple[str, inspect.Signature, str]]:
    """Public methods of ``base`` (and its bases up to ``object``) a subclass may
    override: (name, signature without annotations, one-line description)."""
    found: dict[str, tuple[str, inspect.Signature, str]] = {}
    for klass in reversed(base.__mro__[:-1]):
        for attr, value in vars(klass).items():
            if attr.startswith("_") or not inspect.isfunction(value):
                continue
            try:
                signature = inspect.signature(value)
            except (TypeError, ValueError):
                continue
            plain = signature.replace(
                parameters=[
                    p.replace(annotation=inspect.Parameter.empty)
                    for p in signature.parameters.values()
                ],
                return_annotation=inspect.Signature.empty,
            )
            description = _first_line(value, f"See {klass.__module__}.{klass.__name__}.{attr}.")
            found[attr] = (attr, plain, description)
    return sorted(found.values(), key=lambda item: item[0])


def _call_args(signature: inspect.Signature) -> str:
    parts = []
    for p in list(signature.parameters.values())[1:]:
        if p.kind is p.VAR_POSITIONAL:
            parts.append(f"*{p.name}")
        elif p.kind is p.VAR_KEYWORD:
            parts.append(f"**{p.name}")
        elif p.kind is p.KEYWORD_ONLY:
            parts.append(f"{p.name}={p.name}")
        else:
            parts.append(p.name)
    return ", ".join(parts)


def _override_block(base: type, skip: Iterable[str] = ()) -> str:
    blocks = []
    for name, signature, description in _overridable(base):
        if name in skip:
            continue
        doc = textwrap.fill(description, width=84)
        blocks.append(
            f"    def {name}{signature}:\n"
            f'        """{doc}"""\n'
            f"        return super().{name}({_call_args(signature)})\n"
        )
    return "\n".join(blocks)


class _Context:
    def __init__(self, key: str, kinds: list[str]) -> None:
        self.key = key  # registration name and entry-point name
        self.kinds = kinds
        self.dist = f"deepseek-{key}"
        self.package = "deepseek_" + key.replace("-", "_")
        self.camel = _camel(key)
        self.reg_name = key.replace("-", "_")  # what configs name

    def cls(self, kind: str) -> str:
        return self.camel + SPECS[kind][2] if kind in SPECS else ""

    # -- distribution files -----------------------------------------------------------------
    def pyproject(self) -> str:
        major_minor = ".".join(__version__.split(".")[:2])
        return f"""[build-system]
requires = ["hatchling>=1.21"]
build-backend = "hatchling.build"

[project]
name = "{self.dist}"
version = "0.1.0"
description = "A DeepSeek plugin: {", ".join(self.kinds)}."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["deepseek-core>={major_minor}"]

[project.optional-dependencies]
test = ["pytest>=7"]

# The plugin: DeepSeek imports this module once, at discovery, and calls its hooks.
[project.entry-points.deepseek]
{self.key} = "{self.package}.plugin"

[tool.hatch.build.targets.wheel]
packages = ["src/{self.package}"]
"""

    def readme(self) -> str:
        kinds = "\n".join(
            f"- {kind}: `{self.reg_name}` (`src/{self.package}/{kind}.py`)"
            if kind != "cli"
            else f"- command: `deepseek {self.key}` (`src/{self.package}/cli.py`)"
            for kind in self.kinds
        )
        return f"""# {self.dist}

A [DeepSeek](https://pypi.org/project/deepseek-core/) plugin, generated by
`deepseek new-plugin {self.key}`. It registers:

{kinds}

## Use

```bash
pip install -e .                       # or: pip install {self.dist}
deepseek plugins --check {self.key}    # exit 0: it loads, its hooks and records are valid
python -m pytest -q tests
```

`examples/{self.key}.yaml` shows the names in a config. The plugin module
(`src/{self.package}/plugin.py`) only returns records whose factories are
`deferred("module:Class")`, so discovering the plugin imports nothing heavy.

## Develop

- Each stub subclasses a public base class and overrides every hook, calling the base
  implementation: change only what you need and delete the rest.
- A misspelled hook, a malformed record or a name that another plugin also registers is
  reported by `deepseek plugins` (exit 1); `DEEPSEEK_STRICT_PLUGINS=1` makes it an error.
- To replace a name another distribution registers, pass `override=True` to its record.
"""

    def package_init(self) -> str:
        return f'"""{self.dist}: a DeepSeek plugin."""\n\n__version__ = "0.1.0"\n'

    def plugin_module(self) -> str:
        specs = sorted({SPECS[k][0] for k in self.kinds if k in SPECS})
        imports = ", ".join([*specs, *(["CommandParser"] if "cli" in self.kinds else [])])
        imports = ", ".join(x for x in (imports, "deferred" if specs else "", "hookimpl") if x)
        names = [n.strip() for n in imports.split(",")]
        import_line = (
            "from deepseek.plugins import (\n" + "".join(f"    {n},\n" for n in names) + ")\n"
        )
        parts = [
            f'"""The module the ``{self.key}`` entry point names: DeepSeek imports it once, at\n'
            "discovery. It holds only ``@hookimpl`` functions; every factory is ``deferred`` so\n"
            'nothing heavy is imported until a name is used."""\n',
            "from __future__ import annotations\n",
            import_line,
        ]
        for kind in self.kinds:
            if kind == "cli":
                parts.append(
                    "\n@hookimpl\n"
                    "def deepseek_cli(parser: CommandParser) -> None:\n"
                    f'    """Add ``deepseek {self.key}``."""\n'
                    f"    from {self.package}.cli import add_commands\n\n"
                    "    add_commands(parser)\n"
                )
                continue
            spec, hook, _ = SPECS[kind]
            extra = ', tags=("example",)' if kind in ("model", "metric") else ""
            parts.append(
                f"\n@hookimpl\n"
                f"def {hook}() -> list[{spec}]:\n"
                f"    return [\n"
                f"        {spec}(\n"
                f'            "{self.reg_name}",\n'
                f'            deferred("{self.package}.{kind}:{self.cls(kind)}"),\n'
                f'            "{self._description(kind)}"{extra},\n'
                f"        )\n"
                f"    ]\n"
            )
        return "\n".join(parts)

    def _description(self, kind: str) -> str:
        return {
            "callback": "counts the optimizer steps and epochs it saw",
            "precision": "full precision that counts its optimizer steps",
            "strategy": "one process, one device (a starting point for your own)",
            "backend": "the host CPU under another name (a starting point for a device)",
            "algorithm": "freezes the parameters whose names start with a prefix",
            "model": "a small MLP classifier (in_features, hidden, num_classes)",
            "metric": "fraction of predictions (argmax) equal to the target",
        }[kind]

    @property
    def job_module(self) -> str:
        return f"{self.key.replace('-', '_')}_job"

    def example_job(self) -> str:
        return (
            '"""The example job\'s model and data: module:callable names in the YAML next to\n'
            'this file. Replace them with your own."""\n\n'
            "from __future__ import annotations\n\n"
            "import torch\n\n\n"
            "def model(in_features: int = 4, num_classes: int = 2) -> torch.nn.Module:\n"
            "    return torch.nn.Linear(in_features, num_classes)\n\n\n"
            'def data(split: str = "train", size: int = 64) -> torch.utils.data.Dataset:\n'
            '    generator = torch.Generator().manual_seed(0 if split == "train" else 1)\n'
            "    x = torch.randn(size, 4, generator=generator)\n"
            "    return torch.utils.data.TensorDataset(x, (x.sum(dim=1) > 0).long())\n"
        )

    def example_yaml(self) -> str:
        job = self.job_module
        lines = [
            f"# A job that uses what {self.dist} registers:",
            f"#   deepseek train examples/{self.key}.yaml",
            f"#   deepseek train examples/{self.key}.yaml --print-config   # every option",
            f"output_dir: runs/{self.key}",
        ]
        if "model" in self.kinds:
            lines += ["model:", f"  name: {self.reg_name}", "  in_features: 4"]
        else:
            lines += ["model:", f"  name: {job}:model   # module:callable next to this file"]
        lines += [
            "data:",
            f'  train: {{name: "{job}:data", split: train}}',
            f'  val: {{name: "{job}:data", split: val}}',
            "  batch_size: 16",
            "optimizer: {name: SGD, lr: 0.1}",
            "trainer:",
            "  max_epochs: 1",
            "  loss: cross_entropy",
        ]
        if "precision" in self.kinds:
            lines.append(f"  precision: {self.reg_name}")
        if "strategy" in self.kinds:
            lines.append(f"  strategy: {self.reg_name}")
        if "backend" in self.kinds:
            lines.append(f"  backend: {self.reg_name}")
        if "metric" in self.kinds:
            lines.append(f"  metrics: [{self.reg_name}]")
        if "callback" in self.kinds:
            lines += ["callbacks:", f"  - {{name: {self.reg_name}}}"]
        if "algorithm" in self.kinds:
            lines += ["algorithms:", f"  - {{name: {self.reg_name}, prefix: '0.'}}"]
        return "\n".join(lines) + "\n"

    # -- stubs ----------------------------------------------------------------------------
    def stub(self, kind: str) -> str:
        return getattr(self, f"_stub_{kind}")()

    def _header(self, kind: str, what: str) -> str:
        doc = textwrap.fill(f"{self.dist}: the {kind} ``{self.reg_name}``. {what}", width=84)
        return f'"""{doc}"""\n\nfrom __future__ import annotations\n'

    def _subclass_stub(self, kind: str, body: str, skip: Iterable[str] = ()) -> str:
        import importlib

        module, base_name = BASES[kind]
        base = getattr(importlib.import_module(module), base_name)
        overrides = _override_block(base, skip)
        return (
            self._header(kind, f"Every hook of ``{base_name}`` is listed; each calls the base.")
            + ("\nfrom typing import Any\n" if "Any" in body else "")
            + f"\nfrom {module} import {base_name}\n\n\n"
            f"class {self.cls(kind)}({base_name}):\n"
            f'    """{self._description(kind).capitalize()}."""\n\n'
            + body
            + ("\n" + overrides if overrides else "")
        )

    def _stub_callback(self) -> str:
        body = (
            "    def __init__(self, **options: Any) -> None:\n"
            "        super().__init__()\n"
            "        self.options = options  # what the config passed: callbacks: [{name, ...}]\n"
            "        self.steps = 0\n"
            "        self.epochs = 0\n\n"
            "    def on_before_optimizer_step(self, trainer, optimizer):\n"
            '        """Called before each optimizer step (gradients are ready)."""\n'
            "        self.steps += 1\n"
            "        return super().on_before_optimizer_step(trainer, optimizer)\n\n"
            "    def on_train_epoch_end(self, trainer):\n"
            '        """Called at the end of every training epoch."""\n'
            "        self.epochs += 1\n"
            "        return super().on_train_epoch_end(trainer)\n\n"
            "    def state_dict(self):\n"
            '        """What a checkpoint saves for this callback (restored on resume)."""\n'
            '        return {"steps": self.steps, "epochs": self.epochs}\n\n'
            "    def load_state_dict(self, state):\n"
            '        """Restore :meth:`state_dict`\'s output when a run resumes."""\n'
            '        self.steps, self.epochs = int(state["steps"]), int(state["epochs"])\n'
        )
        skip = {"on_before_optimizer_step", "on_train_epoch_end", "state_dict", "load_state_dict"}
        return self._subclass_stub("callback", body, skip)

    def _stub_precision(self) -> str:
        body = (
            f'    name = "{self.reg_name}"\n\n'
            "    def __init__(self, backend: Any = None, **options: Any) -> None:\n"
            "        super().__init__(backend)\n"
            "        self.options = options\n"
            "        self.steps = 0\n\n"
            "    def step(self, optimizer):\n"
            '        """Step the optimizer; return False when the step was skipped."""\n'
            "        self.steps += 1\n"
            "        return super().step(optimizer)\n"
        )
        return self._subclass_stub("precision", body, {"step", "state_dict", "load_state_dict"})

    def _stub_strategy(self) -> str:
        body = (
            "    def __init__(self, **options: Any) -> None:\n"
            "        super().__init__()\n"
            "        self.options = options  # trainer.strategy: {name, ...options}\n"
        )
        return self._subclass_stub("strategy", body)

    def _stub_backend(self) -> str:
        body = (
            f'    name = "{self.reg_name}"\n'
            "    priority = -100  # below cpu: backend='auto' never picks this stub\n"
        )
        return self._subclass_stub("backend", body)

    def _stub_metric(self) -> str:
        return (
            self._header("metric", "Summed statistics are synced across processes.")
            + "\nfrom typing import Any\n\nimport torch\n\n"
            + "from deepseek.metrics import Metric\n\n\n"
            f"class {self.cls('metric')}(Metric):\n"
            f'    """{self._description("metric").capitalize()}."""\n\n'
            f'    name = "{self.reg_name}"\n'
            "    higher_is_better = True\n"
            '    _sum_states = ("correct", "total")  # tensors summed over batches and ranks\n\n'
            "    def reset(self) -> None:\n"
            '        """Forget every batch seen (called by __init__ and between epochs)."""\n'
            "        self.correct = torch.zeros(())\n"
            "        self.total = torch.zeros(())\n\n"
            "    def update(self, preds: Any, target: Any) -> None:\n"
            '        """Add one batch: ``preds`` are logits (N, C), ``target`` class ids (N,)."""\n'
            "        preds = torch.as_tensor(preds).detach()\n"
            "        target = torch.as_tensor(target).detach()\n"
            "        if preds.ndim == target.ndim + 1:\n"
            "            preds = preds.argmax(dim=-1)\n"
            "        self.correct = self.correct + (preds == target).sum().cpu()\n"
            "        self.total = self.total + target.numel()\n\n"
            "    def _compute(self, states: dict[str, torch.Tensor]) -> torch.Tensor:\n"
            '        """The value from the summed states."""\n'
            '        return states["correct"] / states["total"].clamp(min=1)\n'
        )

    def _stub_algorithm(self) -> str:
        return (
            self._header("algorithm", "``factory(**options)`` builds it; ``apply(model)`` runs it.")
            + "\nfrom torch import nn\n\n\n"
            f"class {self.cls('algorithm')}:\n"
            f'    """{self._description("algorithm").capitalize()}."""\n\n'
            '    def __init__(self, prefix: str = "") -> None:\n'
            "        self.prefix = prefix\n\n"
            "    def apply(self, model: nn.Module) -> nn.Module:\n"
            '        """Transform ``model`` (in place or not) and return the model to train."""\n'
            "        for name, parameter in model.named_parameters():\n"
            "            if name.startswith(self.prefix):\n"
            "                parameter.requires_grad_(False)\n"
            "        return model\n"
        )

    def _stub_model(self) -> str:
        return (
            self._header("model", "``factory(**options)`` returns the ``nn.Module``.")
            + "\nimport torch\nfrom torch import nn\n\n\n"
            f"class {self.cls('model')}(nn.Module):\n"
            f'    """{self._description("model").capitalize()}."""\n\n'
            "    def __init__(self, in_features: int = 4, hidden: int = 16, num_classes: int = 2)"
            " -> None:\n"
            "        super().__init__()\n"
            "        self.net = nn.Sequential(\n"
            "            nn.Linear(in_features, hidden),\n"
            "            nn.ReLU(),\n"
            "            nn.Linear(hidden, num_classes),\n"
            "        )\n\n"
            "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
            "        return self.net(x)\n"
        )

    def _stub_cli(self) -> str:
        return (
            self._header("command", f"``deepseek {self.key}``.")
            + "\nimport argparse\n\nfrom deepseek.plugins import CommandParser\n\n\n"
            "def add_commands(parser: CommandParser) -> None:\n"
            '    """Declare the commands; ``add_command`` returns an argparse parser."""\n'
            f'    command = parser.add_command("{self.key}", help="{self.dist}: say hello", '
            "func=run)\n"
            '    command.add_argument("--name", default="world", help="who to greet")\n\n\n'
            "def run(args: argparse.Namespace) -> int:\n"
            '    """The command: return the exit status."""\n'
            f'    print(f"{self.key}: hello {{args.name}}")\n'
            "    return 0\n"
        )

    # -- tests ----------------------------------------------------------------------------
    def tests(self) -> str:
        k, reg = self.key, self.reg_name
        out = [
            f'"""Tests of {self.dist}, generated with it: they use only DeepSeek\'s public API\n'
            'and pass as generated (pip install -e . && python -m pytest -q tests)."""\n',
            "from __future__ import annotations\n",
            "import subprocess\nimport sys\n\nimport pytest\nimport torch\n",
            "from deepseek.plugins import registry\n\n",
            "def deepseek(*args: str) -> subprocess.CompletedProcess:",
            "    return subprocess.run(",
            '        [sys.executable, "-m", "deepseek.cli", *args],',
            "        capture_output=True,",
            "        text=True,",
            "        timeout=300,",
            "    )\n\n",
            "def test_plugin_passes_deepseek_plugins_check() -> None:",
            f'    result = deepseek("plugins", "--check", "{k}")',
            "    assert result.returncode == 0, result.stdout + result.stderr",
            f'    assert "{k}  ({self.dist}" in result.stdout\n\n',
            "def tiny_data() -> torch.utils.data.TensorDataset:",
            "    generator = torch.Generator().manual_seed(0)",
            "    x = torch.randn(16, 4, generator=generator)",
            "    return torch.utils.data.TensorDataset(x, (x.sum(dim=1) > 0).long())\n\n",
            "def fit(tmp_path, **trainer_options):",
            "    import deepseek as ds",
            "",
            "    model = torch.nn.Linear(4, 2)",
            "    trainer = ds.Trainer(",
            "        model,",
            "        optimizer=torch.optim.SGD,",
            '        optimizer_kwargs={"lr": 0.1},',
            "        train_data=tiny_data(),",
            "        batch_size=4,",
            "        max_epochs=2,",
            "        loss_fn=torch.nn.functional.cross_entropy,",
            "        enable_progress_bar=False,",
            "        default_root_dir=str(tmp_path),",
            "        **trainer_options,",
            "    )",
            "    trainer.fit()",
            "    return trainer\n\n",
        ]
        out += [
            "def test_example_config_trains(tmp_path) -> None:",
            "    from pathlib import Path",
            "",
            f'    config = Path(__file__).parents[1] / "examples" / "{k}.yaml"',
            '    result = deepseek("train", str(config), "--set", f"output_dir={tmp_path}")',
            "    assert result.returncode == 0, result.stdout + result.stderr",
            '    assert (tmp_path / "config.yaml").exists()\n\n',
        ]
        for kind in self.kinds:
            if kind != "cli":
                out += [
                    f"def test_{kind}_is_registered_by_this_distribution() -> None:",
                    f'    provider = registry("{kind}").provider("{reg}")',
                    f'    assert provider.distribution == "{self.dist}"',
                    f'    assert registry("{kind}").get("{reg}").description\n\n',
                ]
            out += self._kind_tests(kind)
        return "\n".join(out).rstrip() + "\n"

    def _kind_tests(self, kind: str) -> list[str]:
        pkg, reg, cls = self.package, self.reg_name, self.cls(kind)
        if kind == "callback":
            return [
                "def test_callback_runs_in_a_trainer(tmp_path) -> None:",
                f'    callback = registry("callback").create("{reg}", every=1)',
                f"    from {pkg}.callback import {cls}",
                "",
                f"    assert isinstance(callback, {cls}) and callback.options == {{'every': 1}}",
                "    fit(tmp_path, callbacks=[callback])",
                "    assert (callback.steps, callback.epochs) == (8, 2)",
                "    restored = type(callback)()",
                "    restored.load_state_dict(callback.state_dict())",
                "    assert (restored.steps, restored.epochs) == (8, 2)\n\n",
            ]
        if kind == "precision":
            return [
                "def test_precision_trains_like_fp32(tmp_path) -> None:",
                "    torch.manual_seed(0)",
                f'    mine = fit(tmp_path / "mine", precision="{reg}", seed=0)',
                "    torch.manual_seed(0)",
                '    reference = fit(tmp_path / "fp32", precision="fp32", seed=0)',
                "    for a, b in zip(mine.model.parameters(), reference.model.parameters()):",
                "        torch.testing.assert_close(a, b)\n\n",
            ]
        if kind == "strategy":
            return [
                "def test_strategy_trains_like_single(tmp_path) -> None:",
                "    torch.manual_seed(0)",
                f'    mine = fit(tmp_path / "mine", strategy="{reg}", seed=0)',
                "    torch.manual_seed(0)",
                '    reference = fit(tmp_path / "single", strategy="single", seed=0)',
                "    for a, b in zip(mine.model.parameters(), reference.model.parameters()):",
                "        torch.testing.assert_close(a, b)\n\n",
            ]
        if kind == "backend":
            return [
                "def test_backend_is_available_but_not_auto() -> None:",
                "    import deepseek as ds",
                "",
                f'    backend = ds.backends.get("{reg}")',
                f'    assert backend.name == "{reg}" and backend.is_available()',
                f'    assert ds.backends.get("auto").name != "{reg}"',
                '    assert backend.device().type == "cpu"\n\n',
            ]
        if kind == "algorithm":
            return [
                "def test_algorithm_freezes_the_prefix() -> None:",
                f'    algorithm = registry("algorithm").create("{reg}", prefix="0.")',
                "    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))",
                "    model = algorithm.apply(model)",
                "    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}",
                '    assert frozen == {"0.weight", "0.bias"}\n\n',
            ]
        if kind == "model":
            return [
                "def test_model_builds_with_options() -> None:",
                f'    model = registry("model").create("{reg}", in_features=3, num_classes=5)',
                "    assert model(torch.randn(2, 3)).shape == (2, 5)\n\n",
            ]
        if kind == "metric":
            return [
                "def test_metric_against_a_naive_computation() -> None:",
                f'    metric = registry("metric").create("{reg}")',
                "    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])",
                "    target = torch.tensor([0, 0, 0])",
                "    metric.update(logits[:2], target[:2])",
                "    metric.update(logits[2:], target[2:])",
                "    expected = (logits.argmax(1) == target).float().mean()",
                "    assert float(metric.compute()) == pytest.approx(float(expected))\n\n",
            ]
        if kind == "cli":
            return [
                "def test_command_runs_and_is_listed() -> None:",
                f'    result = deepseek("{self.key}", "--name", "tests")',
                "    assert result.returncode == 0, result.stderr",
                f'    assert result.stdout.strip() == "{self.key}: hello tests"',
                '    listing = deepseek("plugins").stdout',
                f'    assert "commands    {self.key}" in listing\n\n',
            ]
        return []
