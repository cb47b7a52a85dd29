"""Which package may import which (issue 12): the arrows of the layout, read from the
source with `ast`, so an import inside a function counts as much as one at the top.

- The product (b24pipe, ingress, workers, shared) imports nothing from `tests` or `bench`:
  an installed b24pipe has neither.
- `bench/` imports nothing from `tests`: the process kits both use live in `b24pipe.testing`.
- `ingress/` imports nothing from `workers/`: the thin edge must not load the worker side.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("b24pipe", "ingress", "workers", "shared")


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """(line, top-level package) of every absolute import in one module."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def offenders(packages: tuple[str, ...], forbidden: set[str]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {top}"
        for package in packages
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, top in imported(path)
        if top in forbidden
    ]


@pytest.mark.parametrize(
    ("packages", "forbidden"),
    [
        (PRODUCT, {"tests", "bench"}),
        (("bench",), {"tests"}),
        (("ingress",), {"workers"}),
    ],
    ids=["product-not-tests-or-bench", "bench-not-tests", "ingress-not-workers"],
)
def test_no_import_against_the_layout(packages: tuple[str, ...], forbidden: set[str]) -> None:
    assert offenders(packages, forbidden) == []


def test_the_walk_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from workers.portals import binding\n    import tests.support\n")
    assert list(imported(module)) == [(2, "workers"), (3, "tests")]
