"""The handler API is the package root: every name the README's code and the example app
import comes from `workers` itself, each is in `workers.__all__` and importable, and
importing `workers` does not load the REST client until a handler module asks for it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import workers

ROOT = Path(__file__).resolve().parents[2]
# What the layout issue promises a handler module can import from `workers` alone.
PROMISED = (
    "handler",
    "Retry",
    "Permanent",
    "ApiError",
    "RateLimited",
    "ReauthRequired",
    "WriteUncertain",
    "IdempotencyKeyReused",
    "B24",
    "AsyncB24",
    "Event",
    "register_write",
)


def _readme_python() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"```python[^\n]*\n(.*?)```", readme, flags=re.DOTALL)


def _handler_sources() -> dict[str, str]:
    """The README's Python blocks and the example app: the code an application copies."""
    sources = {f"README.md block {n}": block for n, block in enumerate(_readme_python(), 1)}
    sources["b24pipe/example.py"] = (ROOT / "b24pipe/example.py").read_text()
    for path in sorted((ROOT / "examples").glob("*.py")):
        sources[str(path.relative_to(ROOT))] = path.read_text()
    return sources


def _imports(source: str) -> list[tuple[str, str]]:
    """(module, name) of every `from workers... import name` (blocks that are fragments,
    not whole modules, are read up to what parses)."""
    found = []
    for line in source.splitlines():
        match = re.match(r"\s*from (workers[\w.]*) import (.+)$", line)
        if match:
            tree = ast.parse(line.strip())
            node = tree.body[0]
            assert isinstance(node, ast.ImportFrom)
            found += [(match[1], alias.name) for alias in node.names]
    return found


CITED = sorted(
    {(where, module, name) for where, src in _handler_sources().items() for module, name in _imports(src)}
)


def test_the_readme_and_the_example_import_handler_names_from_the_root() -> None:
    assert CITED, "no `from workers import ...` found: the scan is broken"
    assert [(where, module) for where, module, _ in CITED if module != "workers"] == []


NEEDED = sorted({name for _, _, name in CITED} | set(PROMISED))


@pytest.mark.parametrize("name", NEEDED)
def test_each_name_a_handler_needs_is_exported_from_workers(name: str) -> None:
    assert name in workers.__all__ and getattr(workers, name, None) is not None


def test_an_app_s_import_statement_works_in_a_fresh_interpreter() -> None:
    statement = f"from workers import {', '.join(NEEDED)}"
    subprocess.run([sys.executable, "-c", statement], capture_output=True, check=True, cwd=ROOT)


def test_every_exported_name_resolves() -> None:
    assert all(getattr(workers, name, None) is not None for name in workers.__all__)


def test_importing_workers_leaves_the_rest_client_for_first_use() -> None:
    probe = (
        "import sys, workers\n"
        "print('workers.rest.client' in sys.modules)\n"
        "from workers import B24\n"
        "print('workers.rest.client' in sys.modules, B24.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split("\n")[:2] == ["False", "True workers.rest.client"]
