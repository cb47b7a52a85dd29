"""The error tree drawn in shared/errors.py is the code's: every exception class the product
packages define derives from `B24PipeError` (or is named as outside on purpose), and the
drawing shows each one under its real base."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import shared.errors
from shared.errors import B24PipeError, ConfigurationError

PACKAGES = ("shared", "ingress", "workers")
# one drawn class per line: the tree's branches, the class name, its module, a colon
_LINE = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>\w+)\s+(?P<module>[\w.]+):")


def _defined() -> dict[str, type[BaseException]]:
    """Every exception class defined (not imported) in the product packages, by name."""
    found: dict[str, type[BaseException]] = {}
    for package in PACKAGES:
        root = importlib.import_module(package)
        modules = [root] + [
            importlib.import_module(info.name) for info in pkgutil.walk_packages(root.__path__, f"{package}.")
        ]
        for module in modules:
            for value in vars(module).values():
                if (
                    inspect.isclass(value)
                    and issubclass(value, BaseException)
                    and value.__module__ == module.__name__
                ):
                    assert found.get(value.__name__, value) is value, f"two classes named {value.__name__}"
                    found[value.__name__] = value
    return found


def _drawn() -> tuple[dict[str, tuple[str, str | None]], set[str]]:
    """From the docstring: each tree class's (module, parent), and the classes drawn as
    outside on purpose."""
    doc = shared.errors.__doc__ or ""
    tree_text, _, outside_text = doc.partition("Outside on purpose:")
    tree: dict[str, tuple[str, str | None]] = {}
    parents: list[tuple[int, str]] = []  # (depth, name) of the open branches
    for line in tree_text.splitlines():
        match = _LINE.match(line.strip("\n")[4:])
        if not match:
            continue
        depth = len(match["indent"])
        while parents and parents[-1][0] >= depth:
            parents.pop()
        tree[match["name"]] = (match["module"], parents[-1][1] if parents else None)
        parents.append((depth, match["name"]))
    outside = {m["name"] for line in outside_text.splitlines() if (m := _LINE.match(line[4:]))}
    return tree, outside


def test_every_product_error_derives_from_the_root_or_is_named_outside() -> None:
    _, outside = _drawn()
    defined = _defined()
    assert outside <= set(defined)
    excused = {name for name, cls in defined.items() if any(defined[o] in cls.__mro__ for o in outside)}
    strays = sorted(
        f"{cls.__module__}.{name}"
        for name, cls in defined.items()
        if name not in excused and not issubclass(cls, B24PipeError)
    )
    assert strays == []


def test_the_docstring_draws_every_class_under_its_real_base() -> None:
    tree, _ = _drawn()
    defined = _defined()
    in_tree = {name for name, cls in defined.items() if issubclass(cls, B24PipeError)}
    assert set(tree) == in_tree
    for name, (module, parent) in tree.items():
        cls = defined[name]
        assert cls.__module__ == module, name
        if parent is None:
            assert cls is B24PipeError
        else:
            assert defined[parent] in cls.__bases__, f"{name} is drawn under {parent}"


def test_a_configuration_error_may_name_its_problem_by_code() -> None:
    named = ConfigurationError("B24_CLIENT_SECRET is not set", code="NO_CLIENT_CREDENTIALS")
    assert (named.code, str(named)) == (
        "NO_CLIENT_CREDENTIALS",
        "NO_CLIENT_CREDENTIALS: B24_CLIENT_SECRET is not set",
    )
    plain = ConfigurationError("invalid setting B24PIPE_ACK: must be one of written, fsync, replica")
    assert (plain.code, str(plain)) == (
        "",
        "invalid setting B24PIPE_ACK: must be one of written, fsync, replica",
    )
