"""The documentation site's promises, tested: every ```python block in docs/*.md runs,
the cheap ``deepseek ...`` commands it documents run, every ``deepseek <command>`` it
mentions exists, its internal links resolve, and its generated pages cover the code.

A block preceded by a comment such as ``<!-- skip: needs GPU -->`` is only compiled.
Snippets run in-process (torch is imported once) in a fresh namespace, from a temporary
working directory. Package READMEs (included into the guides) are not run here.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(?P<lang>[\w-]*)")
SKIP = re.compile(r"<!--\s*skip:\s*(?P<reason>[^>]*?)\s*-->")

pytestmark = pytest.mark.skipif(not DOCS.is_dir(), reason="docs/ is not next to the sources")


def code_blocks(text: str, lang: str) -> list[tuple[int, str, str | None]]:
    """(line number, code, skip reason or None) of each fenced block in ``lang``; the
    skip reason comes from a ``<!-- skip: ... -->`` comment on the line before the fence."""
    blocks = []
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
        if fence["lang"] == lang:
            skip = SKIP.search(lines[i - 1]) if i else None
            blocks.append((i + 2, "".join(lines[i + 1 : end]), skip["reason"] if skip else None))
        i = end + 1
    return blocks


def doc_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md")) if DOCS.is_dir() else []


def python_snippets() -> list:
    params = []
    for page in doc_pages():
        for line, code, skip in code_blocks(page.read_text(encoding="utf-8"), "python"):
            name = f"{page.relative_to(DOCS)}:{line}"
            params.append(pytest.param(page, line, code, skip, id=name))
    return params


def test_the_docs_have_python_snippets() -> None:
    assert len(python_snippets()) >= 8


def test_block_extraction_and_skip_marker() -> None:
    text = (
        "Intro\n\n```python\nx = 1\n```\n\n<!-- skip: needs GPU -->\n```python\n"
        "torch.cuda.init()\n```\n\n```bash\ndeepseek env\n```\n"
    )
    blocks = code_blocks(text, "python")
    assert [(code, skip) for _, code, skip in blocks] == [
        ("x = 1\n", None),
        ("torch.cuda.init()\n", "needs GPU"),
    ]
    assert [code for _, code, _ in code_blocks(text, "bash")] == ["deepseek env\n"]


@pytest.mark.parametrize(("page", "line", "code", "skip"), python_snippets())
def test_python_snippet_runs(page, line, code, skip, tmp_path, monkeypatch) -> None:
    compiled = compile(code, f"{page.relative_to(ROOT)}:{line}", "exec")
    if skip:
        pytest.skip(f"compiled only: {skip}")
    monkeypatch.chdir(tmp_path)
    exec(compiled, {"__name__": "__main__"})


def documented_commands() -> list[tuple[str, list[str]]]:
    """(page, argv after ``deepseek``) of every ``deepseek ...`` line in a bash block."""
    found = []
    for page in doc_pages():
        for _, code, _ in code_blocks(page.read_text(encoding="utf-8"), "bash"):
            for command in re.split(r"&&|\n", code):
                command = command.split("#", 1)[0].strip()
                words = shlex.split(command) if command else []
                if words[:1] == ["deepseek"] and len(words) > 1:
                    found.append((page.name, words[1:]))
    return found


def test_every_documented_command_exists_and_parses() -> None:
    from deepseek.cli import build_parser

    parser = build_parser()
    subcommands = next(
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    ).choices
    commands = documented_commands()
    assert {argv[0] for _, argv in commands} >= {"env", "plugins", "new-plugin", "train"}
    for page, argv in commands:
        if argv[0] not in subcommands and not all_first_party_installed():
            continue  # e.g. `deepseek launch` comes with deepseek-dist
        assert argv[0] in subcommands, f"{page}: deepseek {argv[0]} is not a command"
        # Options and arguments are accepted as written (parse only, nothing runs).
        subcommands[argv[0]].parse_args(argv[1:])


def all_first_party_installed() -> bool:
    from importlib.metadata import PackageNotFoundError, version

    from deepseek.plugins.first_party import FIRST_PARTY

    try:
        for dist in FIRST_PARTY:
            version(dist.distribution)
    except PackageNotFoundError:
        return False
    return True


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deepseek.cli", *args],
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )  # fmt: skip


def test_deepseek_env_as_documented(capsys) -> None:
    from deepseek.cli import main

    status = main(["env"])
    out = capsys.readouterr().out
    assert "torch" in out
    assert "Problems" in out or "No problems found." in out
    # Exit status 1 exactly when a problem is an error (what troubleshooting.md says).
    from deepseek.utils import check_env

    errors = [p for p in check_env.collect()["problems"] if p["severity"] == "error"]
    assert status == (1 if errors else 0), out


def test_deepseek_plugins_as_documented() -> None:
    result = run_cli("plugins")
    assert result.returncode in (0, 1), result.stderr
    assert "deepseek-core" in result.stdout
    assert "Traceback" not in result.stderr


def test_new_plugin_writes_the_documented_tree(tmp_path) -> None:
    page = (DOCS / "writing-a-plugin.md").read_text(encoding="utf-8")
    argv = next(a for p, a in documented_commands() if p == "writing-a-plugin.md" and
                a[0] == "new-plugin")  # fmt: skip
    result = run_cli(*argv, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    dist = tmp_path / "plugins-dev" / "deepseek-jsonl"
    tree = next(code for _, code, _ in code_blocks(page, "") if "pyproject.toml" in code)
    listed = [line.split()[0] for line in tree.splitlines() if line.strip()]
    for relative in listed:
        assert (dist / relative).is_file(), f"the docs list {relative}; new-plugin did not write it"
    entry_point = 'jsonl = "deepseek_jsonl.plugin"'
    assert entry_point in (dist / "pyproject.toml").read_text()
    assert entry_point in page


LINK = re.compile(r"\]\((?P<target>[^)#\s]+\.md)(?:#[^)]*)?\)")


def test_internal_links_resolve() -> None:
    for page in doc_pages():
        for match in LINK.finditer(page.read_text(encoding="utf-8")):
            target = (page.parent / match["target"]).resolve()
            assert target.is_file(), f"{page.relative_to(ROOT)} links to missing {match['target']}"


def test_guides_include_existing_package_readmes() -> None:
    guides = sorted((DOCS / "guides").glob("*.md"))
    assert guides
    for page in doc_pages():
        for include in re.findall(r'--8<-- "([^"]+)"', page.read_text(encoding="utf-8")):
            assert (ROOT / include).is_file(), f"{page.name} includes missing {include}"
    readmes = {p.parent.name for p in (ROOT / "packages").glob("*/README.md")}
    assert {g.stem for g in guides} == readmes, "one guide per package README"


def load_docs_module(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_{name}", DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_config_reference_covers_every_trainer_option() -> None:
    from deepseek.config.schema import SET_ELSEWHERE
    from deepseek.config.trainer_options import fit_parameters, trainer_parameters
    from deepseek.training import Trainer

    reference = load_docs_module("hooks").config_reference()
    shown = set(re.findall(r"^\| `([\w.]+)` \|", reference, re.M))
    for name in [*trainer_parameters(), *fit_parameters()]:
        if name in ("self", "train_data", "val_data"):
            continue
        assert name in shown, f"trainer.{name} is missing from the configuration reference"
    for name in inspect.signature(Trainer.__init__).parameters:
        if name != "self":
            assert name in shown or f"trainer.{name}" in SET_ELSEWHERE, name


def test_hooks_table_lists_every_hook() -> None:
    from deepseek.plugins.hookspecs import HOOK_NAMES

    table = load_docs_module("hooks").hooks_reference()
    assert [re.match(r"\| `(\w+)\(", line)[1] for line in table.splitlines()[2:]] == HOOK_NAMES


def test_doctest_fences_for_the_api_reference() -> None:
    pytest.importorskip("griffe")
    fence = load_docs_module("griffe_doctest_fences").fence_doctests
    text = "Intro.\n\n    >>> [1, 2]\n    [1, 2]\n\nMore.\n\n```pycon\n>>> 1\n1\n```"
    assert fence(text) == (
        "Intro.\n\n    ```pycon\n    >>> [1, 2]\n    [1, 2]\n    ```\n\nMore.\n\n"
        "```pycon\n>>> 1\n1\n```"
    )


def test_benchmarks_page_lists_every_script_with_a_working_command() -> None:
    table = load_docs_module("hooks").benchmarks_reference(ROOT)
    scripts = sorted((ROOT / "benchmarks").glob("bench_*.py"))
    assert scripts
    for script in scripts:
        assert f"`python benchmarks/{script.name} --quick`" in table
        assert "--quick" in script.read_text(encoding="utf-8"), f"{script.name} has no --quick"


def test_print_config_as_documented(capsys, monkeypatch) -> None:
    from deepseek.cli import main

    argv = next(
        a for p, a in documented_commands() if p == "configuration.md" and "--print-config" in a
    )
    monkeypatch.chdir(ROOT)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^  max_epochs: 3$", printed, re.M), printed
    # Every top-level key of the generated reference is a key of the resolved config.
    reference = load_docs_module("hooks").config_reference()
    top = reference.split("### `data`")[0]
    for key in re.findall(r"^\| `(\w+)` \|", top, re.M):
        assert re.search(rf"^{key}:", printed, re.M), f"{key} documented but not printed"


def test_getting_started_has_the_readme_two_commands() -> None:
    readme = code_blocks((ROOT / "README.md").read_text(encoding="utf-8"), "bash")
    page = code_blocks((DOCS / "getting-started.md").read_text(encoding="utf-8"), "bash")
    assert [code for _, code, _ in page[:2]] == [code for _, code, _ in readme[:2]]


def test_troubleshooting_shows_every_fix_check_env_gives() -> None:
    """Each fix text in deepseek.utils.check_env (the literal parts of Problem's third
    argument) appears on the troubleshooting page: a new problem needs a row there."""
    import ast

    from deepseek.utils import check_env

    tree = ast.parse(Path(check_env.__file__).read_text(encoding="utf-8"))
    assigned = {
        target.id: node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    pieces = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Problem":
            fix = node.args[2] if len(node.args) == 3 else None
            fix = assigned.get(fix.id, fix) if isinstance(fix, ast.Name) else fix
            for part in ast.walk(fix) if fix is not None else ():
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    pieces.add(part.value.strip())
    pieces -= {"see the message"}  # the message itself says what to do
    pieces = {p for p in pieces if len(p) >= 8}
    assert len(pieces) >= 10
    page = (DOCS / "troubleshooting.md").read_text(encoding="utf-8").replace("`", "")
    missing = sorted(p for p in pieces if p not in page)
    assert not missing, f"troubleshooting.md lacks these fixes from check_env: {missing}"
