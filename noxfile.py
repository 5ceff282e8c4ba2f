"""Every test, lint, docs, demo and benchmark session.

``nox`` runs the default sessions (each package's tests in its own venv, plugins,
integration, wheels, lint); ``nox -l`` lists them all. Every install goes through
``constraints.txt`` so torch stays the pinned CPU build.
"""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
# Package directory -> the sibling directories it depends on (besides core). The list of
# first-party packages is core's one table (deepseek/_first_party.py), not a copy.
_FIRST_PARTY = runpy.run_path(str(ROOT / "packages/core/src/deepseek/_first_party.py"))
PACKAGES: dict[str, list[str]] = {
    d.distribution.removeprefix("deepseek-"): [] for d in _FIRST_PARTY["FIRST_PARTY"]
}
PYTEST = ("pytest", "-q", "-p", "no:cacheprovider", "--durations=5")  # slowest 5 in the log
# One torch thread per process: the multi-process tests start 2-4 processes on the 2-core CI
# machine, where torch's default (a thread per core each) oversubscribes it.
TEST_ENV = {"OMP_NUM_THREADS": "1"}

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = False
nox.options.sessions = ["tests", "plugins", "integration", "wheels", "lint", "demo"]


def install(session: nox.Session, *args: str) -> None:
    session.install(*CONSTRAINTS, *args)


def editable(*dirs: str) -> list[str]:
    args: list[str] = []
    for d in dirs:
        args += ["-e", str(ROOT / d)]
    return args


def plugin_dirs() -> list[str]:
    """Every plugin distribution under plugins/, relative to the root."""
    found = (p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").exists())
    return sorted(str(p.relative_to(ROOT)) for p in found)


@nox.session
@nox.parametrize("package", list(PACKAGES))
def tests(session: nox.Session, package: str) -> None:
    """One package's tests in a venv holding only it and its declared dependencies."""
    # The package under test brings its `test` extra (reference libraries such as
    # transformers or monai live there, never in the runtime dependencies).
    dirs = ["packages/core[test]", *(f"packages/{d}" for d in PACKAGES[package])]
    if package != "core":
        dirs.append(f"packages/{package}[test]")
    install(session, "pytest", *editable(*dirs))
    paths = [f"packages/{package}/tests"]
    if package != "core":
        # With only this package beside core, every absent sibling must give its hint.
        paths.append("packages/core/tests/test_namespace.py")
    session.run(*PYTEST, *paths, *session.posargs, env=TEST_ENV)
    # Every docstring example runs; importlib mode imports each module under its real name
    # (deepseek.nlp...) inside the namespace package.
    session.run(
        *PYTEST,
        "--doctest-modules",
        "--import-mode=importlib",
        f"packages/{package}/src",
        env=TEST_ENV,
    )


@nox.session
def plugins(session: nox.Session) -> None:
    """Third-party-style plugins under plugins/, each installed as a real distribution,
    and the plugin system's discovery tests (which build and install tiny plugins)."""
    install(session, "pytest", "hatchling", *editable("packages/core"))
    for path in plugin_dirs():
        install(session, "-e", f"{ROOT / path}[test]")  # test extra: reference libraries
    session.run(
        *PYTEST, "plugins", "packages/core/tests/test_new_plugin.py", *session.posargs, env=TEST_ENV
    )


@nox.session
def integration(session: nox.Session) -> None:
    """Tests that need several distributions at once."""
    # core[examples] brings matplotlib (the examples' plots and overlays) and scikit-learn.
    siblings = [f"packages/{p}" for p in PACKAGES if p != "core"]
    install(session, "pytest", *editable("packages/core[examples]", *siblings))
    install(session, *editable("packages/framework", *plugin_dirs()))
    # deepseek-moe's expert-parallel tests need deepseek-dist, absent from moe's own session.
    moe_with_dist = "packages/moe/tests/test_moe_expert_parallel_state.py"
    session.run(*PYTEST, "integration-tests", moe_with_dist, *session.posargs, env=TEST_ENV)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site strictly (broken links, anchors and references fail).
    Every package is installed so the generated configuration reference is complete."""
    siblings = [f"packages/{p}" for p in PACKAGES if p != "core"]
    install(session, *editable("packages/core[docs]", *siblings))
    session.run("mkdocs", "build", "--strict", "--site-dir", f"{session.create_tmp()}/site")


@nox.session
def wheels(session: nox.Session) -> None:
    """The install matrix, from built wheels: every distribution and plugin is built and
    the namespace rule checked; everything (``deepseek-framework`` and the plugins) is
    installed non-editable and the smoke tests run; then each distribution alone with
    core, and each plugin with only core, is checked by ``.ci/check_install.py``: imports,
    ``deepseek plugins`` and the install hints of everything absent."""
    dist = Path(session.create_tmp()) / "wheels"
    shutil.rmtree(dist, ignore_errors=True)
    install(session, "hatchling", "pytest")
    sources = [f"packages/{p}" for p in [*PACKAGES, "framework"]] + plugin_dirs()
    for source in sources:
        session.run(
            "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(dist),
            str(ROOT / source),
        )  # fmt: skip
    session.run("python", str(ROOT / ".ci" / "check_wheels.py"), str(dist))
    first_party = [f"deepseek-{p}" for p in PACKAGES]
    plugins = [_project_name(ROOT / d) for d in plugin_dirs()]
    # Everything: third-party dependencies are installed once, here; each later row only
    # swaps the deepseek distributions, from the wheels alone (--no-index: never a
    # same-named project from the package index), their deepseek-* dependencies included.
    install(session, *sorted(str(w) for w in dist.glob("*.whl")))
    with session.chdir(session.create_tmp()):  # outside the repository: no source imports
        session.run(
            *PYTEST,
            str(ROOT / "integration-tests" / "test_smoke.py"),
            *session.posargs,
            env=TEST_ENV,
        )
    check = ("python", str(ROOT / ".ci" / "check_install.py"))
    session.run(*check, "deepseek-framework", *first_party, *plugins)
    rows = [[name] for name in first_party] + [["deepseek-core", p] for p in plugins]
    everything = ["deepseek-framework", *first_party, *plugins]
    for row in rows:
        session.run("pip", "uninstall", "--yes", "--quiet", *everything)
        install(session, "--quiet", "--no-index", "--find-links", str(dist), *row)
        session.run(*check, *{"deepseek-core", *row})


def _project_name(directory: Path) -> str:
    import tomllib

    return tomllib.loads((directory / "pyproject.toml").read_text())["project"]["name"]


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def demo(session: nox.Session) -> None:
    """The README's main job: the quickstart, stopped after 4 epochs, then resumed from its
    last checkpoint to the end; then the profiler's report on the same job."""
    install(session, *editable("packages/core[examples]"))
    session.run("deepseek", "env")
    out = Path(session.create_tmp()) / "quickstart"
    shutil.rmtree(out, ignore_errors=True)
    job = ["deepseek", "train", "examples/quickstart.yaml", "--set", f"output_dir={out}"]
    session.run(*job, "--set", "trainer.max_epochs=4")
    session.run(*job, "--set", "trainer.resume=last")
    session.run("deepseek", "profile", "examples/quickstart.yaml", "--set", f"output_dir={out}")


@nox.session
def bench(session: nox.Session) -> None:
    """Every benchmark in benchmarks/ (long; not part of the default run)."""
    install(session, *editable(*(f"packages/{p}" for p in PACKAGES)))
    install(session, "-e", str(ROOT / "packages/core[examples]"), "lightning")
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)
