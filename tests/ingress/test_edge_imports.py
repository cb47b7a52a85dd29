"""The ingress is the thin edge: it imports `shared` (what both sides use), never the worker
package, neither in its own modules nor through anything they import."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import ingress

INGRESS = Path(ingress.__file__).parent


def _imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _is_workers(name: str) -> bool:
    return name == "workers" or name.startswith("workers.")


def test_no_ingress_module_names_the_worker_package() -> None:
    sources = sorted(INGRESS.rglob("*.py"))
    assert len(sources) > 5
    found = {
        str(path.relative_to(INGRESS)): sorted(filter(_is_workers, _imported(ast.parse(path.read_text()))))
        for path in sources
    }
    assert {path: names for path, names in found.items() if names} == {}


def test_running_the_ingress_loads_no_worker_module() -> None:
    """Every ingress module imported in a fresh interpreter: whatever they import, at any
    depth, leaves `workers` out of sys.modules."""
    modules = sorted(
        "ingress." + ".".join(path.relative_to(INGRESS).with_suffix("").parts)
        for path in INGRESS.rglob("*.py")
        if path.name != "__init__.py"
    )
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'workers' or m.startswith('workers.'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=INGRESS.parent, capture_output=True, text=True, check=True
    )
    assert "ingress.server" in modules
    assert json.loads(done.stdout) == []
