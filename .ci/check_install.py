"""Check one installation of the install matrix (``nox -s wheels``).

    python .ci/check_install.py deepseek-core deepseek-nlp
    python .ci/check_install.py deepseek-core deepseek-lora

The arguments are the distributions that should be installed (first-party ones, plugins,
``deepseek-framework``). Fails (exit 1, one line per problem) unless exactly those are
installed; every installed subpackage imports; every absent first-party one raises the
``pip install deepseek-<name>`` hint, on import and for each name it would register; and
``deepseek plugins`` lists the installed plugins, all loaded, and nothing else.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import shutil
import subprocess
import sys


def installed_distributions() -> set[str]:
    names = (d.metadata["Name"] or "" for d in importlib.metadata.distributions())
    return {n.lower() for n in names if n.lower().startswith("deepseek")}


def plugin_names(distribution: str) -> set[str]:
    points = importlib.metadata.distribution(distribution).entry_points
    return {p.name for p in points if p.group == "deepseek"}


def check(expected: set[str]) -> list[str]:
    import deepseek as ds
    from deepseek.plugins import first_party
    from deepseek.plugins.registry import registry

    found = installed_distributions()
    if found != expected:
        return [f"installed {sorted(found)}; expected {sorted(expected)}"]

    problems: list[str] = []
    for dist in first_party.FIRST_PARTY:
        present = dist.distribution in found
        for sub in dist.subpackages:
            try:
                importlib.import_module(f"deepseek.{sub}")
                if not present:
                    problems.append(f"deepseek.{sub} imports without {dist.distribution}")
            except ImportError as exc:
                if present:
                    problems.append(f"deepseek.{sub} fails to import: {exc}")
                elif f"pip install {dist.distribution}" not in str(exc):
                    problems.append(f"import deepseek.{sub}: no install hint in {exc!r}")
            try:
                getattr(ds, sub)
            except ImportError as exc:
                if present or f"pip install {dist.distribution}" not in str(exc):
                    problems.append(f"ds.{sub}: {exc!r}")
        for kind, names in dist.hints.items():
            for name in names:
                try:
                    registry(kind).get(name)
                    if not present:
                        problems.append(f"{kind} {name!r} registered without {dist.distribution}")
                except LookupError as exc:
                    if present:
                        problems.append(f"{kind} {name!r} missing with {dist.distribution}")
                    elif f"pip install {dist.distribution}" not in str(exc):
                        problems.append(f"{kind} {name!r}: no install hint in {exc}")

    cli = shutil.which("deepseek")
    if cli is None:
        return [*problems, "no `deepseek` command on PATH"]
    listing = subprocess.run([cli, "plugins", "--json"], capture_output=True, text=True)
    if listing.returncode != 0:
        return [*problems, f"deepseek plugins exited {listing.returncode}: {listing.stderr}"]
    listed = {r["name"]: r for r in json.loads(listing.stdout)}
    wanted = set().union(*(plugin_names(d) for d in found))
    if set(listed) != wanted:
        problems.append(f"deepseek plugins lists {sorted(listed)}; expected {sorted(wanted)}")
    for name, record in listed.items():
        if record["status"] != "loaded" or record["problems"]:
            problems.append(f"plugin {name}: {record['status']}, {record['problems']}")
    return problems


def main(argv: list[str]) -> int:
    expected = {name.lower() for name in argv}
    problems = check(expected)
    label = " + ".join(sorted(n.removeprefix("deepseek-") for n in expected))
    for problem in problems:
        print(f"[{label}] {problem}")
    print(f"[{label}] {'FAILED' if problems else 'ok'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
