"""The README names only what exists (issue 12): it is the public contract, and a name that
moved or a behaviour that went away must fail here, not mislead a reader.

What it cites and what each must be, read from README.md as written (code spans and code
blocks), against the code itself:

- a file or folder path (`workers/rest/client.py`, `deploy/k8s/base`): exists in the tree;
  the "Layout" section's tree: every file and folder it lists, and every file named in a
  line's comment, exists where the tree puts it;
- a dotted name (`workers.dispatch.run_event`) and each name a Python block imports:
  imports (a logger name, `b24pipe.security`, is a string the code logs under; a job path
  an earlier release queued maps through `shared.jobs.LEGACY_PATHS` to one that imports);
- `B24PIPE_*`, `B24_*` and `REDIS_URL`: a setting `shared/settings.py` reads, with the
  default the settings tables give (where they give a number or a word);
- a metric (`b24pipe_rest_calls_total{method,status}`): registered by a module that uses
  prometheus_client (counters with or without `_total`, histograms' `_count`/`_sum`);
- `make <target>`: a target of the Makefile; `b24pipe <command> ... --option`: a command,
  subcommand and option of the CLI's own parser;
- a class (`WriteUncertain`, `SimClient`), a called function (`update_if_changed(...)`) or a
  `b24.` method: defined in the product (or Python's, RQ's, PromQL's or the deploy files');
- a Redis key (`<ns>:offline:<member>:lock`): one `shared.keys.Keys` makes;
- a test (`test_client_sim`): a test module or function of tests/.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import fnmatch
import importlib
import inspect
import re
import shlex
from functools import cache
from pathlib import Path

import rq
import rq.registry
from pydantic.fields import FieldInfo
from rq.job import Job

from b24pipe.cli import build_parser
from b24pipe.sim.client import SimClient
from shared.jobs import LEGACY_PATHS
from shared.keys import Keys
from shared.settings import Settings
from workers.rest.client import B24, AsyncB24

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PRODUCT = ("b24pipe", "ingress", "workers", "shared")
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
TOP = r"(?:b24pipe|ingress|workers|shared|tests|bench|deploy|examples)"
PATH = re.compile(rf"{TOP}/[\w./*@-]*")
DOTTED = re.compile(r"((?:b24pipe|ingress|workers|shared|bench|tests)(?:\.\w+)+)(?:\(.*\))?")
SETTING = re.compile(r"\b(?:B24PIPE_[A-Z0-9_]*[A-Z0-9]|B24_[A-Z0-9_]*[A-Z0-9]|REDIS_URL)\b")
METRIC = re.compile(r"(b24pipe_[a-z0-9_]+)(?:\{[\w,]*\})?")
CLASS = re.compile(r"([A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*)(?:\(.*\))?")
CALL = re.compile(r"([a-z_][a-z0-9_]*)\(.*\)")
# Calls the README shows that are not Python's or ours: PromQL's, the Bitrix24 JS SDK's, the
# socket call, and `fn`, the README's name for the app's own handler.
FOREIGN_CALLS = {"increase", "rate", "sum", "max", "installFinish", "accept", "fn"}
# Spans shaped like a metric that are not one, and where the code defines each instead.
NOT_METRICS = {
    "b24pipe_handlers": ("b24pipe/pytest_plugin.py", 'addini("b24pipe_handlers"'),  # an ini option
    "b24pipe_probe": ("shared/probe.py", 'MARKER = "b24pipe_probe"'),  # the probe's event.test parameter
}
METRIC_SUFFIXES = ("_total", "_count", "_sum", "_bucket")


def _prose() -> str:
    return FENCE.sub("", README)


def spans() -> list[str]:
    """Every inline code span outside code blocks, whitespace folded (a span may wrap)."""
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", _prose())]


def blocks(language: str) -> list[str]:
    return [body for info, body in FENCE.findall(README) if info.split(" ")[0] == language]


def matching(pattern: re.Pattern[str]) -> list[str]:
    """Group 1 (or the whole span) of every span the pattern matches in full."""
    found = []
    for span in spans():
        if m := pattern.fullmatch(span):
            found.append(m.group(1) if pattern.groups else m.group(0))
    return sorted(set(found))


@cache
def _modules(packages: tuple[str, ...] = PRODUCT) -> list[tuple[Path, ast.Module]]:
    return [
        (path, ast.parse(path.read_text(), str(path)))
        for package in packages
        for path in sorted((ROOT / package).rglob("*.py"))
    ]


@cache
def defined() -> frozenset[str]:
    """Names of every class and function the product defines."""
    return frozenset(
        node.name
        for _, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
    )


# --- paths -----------------------------------------------------------------------------------


def cited_paths() -> list[str]:
    """Every repository path in the prose, in a code span or not (`var/demo.env`, a URL's
    path and the like do not start with one of our folders)."""
    found = {path.rstrip(".,;:") for path in re.findall(rf"(?<![\w/<.-]){PATH.pattern}", _prose())}
    made = set(re.findall(rf"\bcp \S+ ({PATH.pattern})", _prose()))  # the reader creates these
    return sorted(found - made)


def test_every_path_the_readme_names_exists() -> None:
    paths = cited_paths()
    assert "workers/rest/client.py" in paths and "workers/runner/outcome.py" in paths
    assert [p for p in paths if not any(ROOT.glob(p.rstrip("/")))] == []


def tree_rows(tree: str) -> list[tuple[int, list[str], str]]:
    """(depth, names, comment) of each line of a tree drawn as the Layout section draws it:
    two spaces per level, the names, then two spaces or more and a comment."""
    rows = []
    for line in tree.splitlines():
        depth = (len(line) - len(line.lstrip(" "))) // 2
        first, _, comment = line.strip().partition("  ")
        rows.append((depth, first.split(" "), comment))
    return rows


def layout_tree() -> str:
    section = README.split("\n## Layout", 1)[1].split("\n## ", 1)[0]
    (tree,) = [str(body) for _, body in FENCE.findall(section)]
    return tree


def tree_missing(tree: str) -> list[str]:
    """What a tree names that is not there. Each line's names sit in the folder of the last
    line one level up; a file a comment names (`worker.py`) sits in the line's folder, or
    beside the line's file."""
    parents: list[Path] = [ROOT]
    missing = []
    for depth, names, comment in tree_rows(tree):
        assert depth < len(parents), f"{names} is indented below nothing"
        del parents[depth + 1 :]
        here = parents[depth]
        missing += [str((here / name).relative_to(ROOT)) for name in names if not (here / name).exists()]
        folder = here / names[0] if names[0].endswith("/") else here
        for named in re.findall(r"\b[\w/-]+\.(?:py|lua)\b", comment):
            if not (folder / named).exists():
                missing.append(f"{(folder / named).relative_to(ROOT)} (named in the comment of {names[0]})")
        parents.append(here / names[0])
    return missing


def test_the_layout_tree_is_the_tree() -> None:
    assert len(tree_rows(layout_tree())) >= 20, "the Layout tree is missing or unreadable"
    assert tree_missing(layout_tree()) == []
    wrong = "workers/  the job loop (worker.py)\n  runner/\n    fetch.py\nshared/\n  lua/  (enqueue.lua)\n"
    assert tree_missing(wrong) == [
        "workers/worker.py (named in the comment of workers/)",
        "workers/runner/fetch.py",
    ]


# --- Python names ----------------------------------------------------------------------------


def _module_path(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def bound(body: list[ast.stmt]) -> dict[str, ast.stmt]:
    """The names a module's or class's body binds, each with its statement."""
    found: dict[str, ast.stmt] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found[node.name] = node
        elif isinstance(node, ast.Assign):
            found |= {target.id: node for target in node.targets if isinstance(target, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found[node.target.id] = node
        elif isinstance(node, ast.Import | ast.ImportFrom):
            found |= {(alias.asname or alias.name).split(".")[0]: node for alias in node.names}
    return found


def resolves(dotted: str) -> bool:
    """A module of ours, or a name it binds (a class's too: `Class.method`), read from the
    source: importing would run modules, and a handler module registers its handlers in
    this process. Only a module that exports names lazily (`__getattr__`, as a package
    root may) is imported, to ask it."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        path = _module_path(module)
        if path is None:
            continue
        body = ast.parse(path.read_text()).body
        if parts[cut:] and "__getattr__" in bound(body):  # a package root exporting lazily
            return _has_chain(importlib.import_module(module), parts[cut:])
        for name in parts[cut:]:
            node = bound(body).get(name)
            if node is None:
                return False
            body = node.body if isinstance(node, ast.ClassDef) else []
        return True
    return False


def _has_chain(target: object, names: list[str]) -> bool:
    for name in names:
        if not hasattr(target, name):
            return False
        target = getattr(target, name)
    return True


def logged_under(name: str) -> bool:
    """A name the product spells as a string constant: a logger's (`b24pipe.security`)."""
    return any(
        isinstance(node, ast.Constant) and node.value == name
        for _, tree in _modules()
        for node in ast.walk(tree)
    )


def block_imports() -> list[str]:
    """`module.name` for each name the README's Python blocks import from our packages."""
    found = []
    for body in blocks("python"):
        for node in ast.walk(ast.parse(body)):
            if isinstance(node, ast.ImportFrom) and node.module and DOTTED.fullmatch(f"{node.module}.x"):
                found += [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                found += [alias.name for alias in node.names if alias.name.split(".")[0] in PRODUCT]
    return found


def test_every_python_name_the_readme_cites_imports() -> None:
    run = re.findall(r"python -m ([\w.]+)", README)  # `python -m b24pipe.sim` runs a module
    names = matching(DOTTED) + block_imports() + run
    assert {"workers.dispatch.run_event", "workers.handler", "b24pipe.sim"} <= set(names)
    # a path an earlier release queued is named as such; what it maps to must exist
    names = [LEGACY_PATHS.get(name, name) for name in names]
    assert [name for name in names if not resolves(name) and not logged_under(name)] == []
    assert not resolves("workers.dispatch.no_such_function")
    assert resolves("workers.lifecycle.reconcile_bindings") and resolves("shared.events.Event.entity_key")


def test_every_class_and_function_the_readme_names_is_defined() -> None:
    deploy = "\n".join(p.read_text() for p in (ROOT / "deploy").rglob("*.y*ml"))
    classes = [
        name
        for name in matching(CLASS)
        if name not in defined()
        and not hasattr(builtins, name)
        and not hasattr(rq, name)
        and not hasattr(rq.registry, name)
        and not re.search(rf"^\s*(?:- alert|kind): {name}$", deploy, re.MULTILINE)
        and not (ROOT / name).is_file()
    ]
    assert classes == []
    calls = [
        name
        for name in matching(CALL)
        if name not in defined() and not hasattr(builtins, name) and name not in FOREIGN_CALLS
    ]
    assert calls == []


@cache
def product_classes() -> dict[str, list[ast.ClassDef]]:
    """Every class the product defines, by name (a name two modules define maps to both)."""
    found: dict[str, list[ast.ClassDef]] = {}
    for _, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                found.setdefault(node.name, []).append(node)
    return found


def has_member(class_name: str, member: str) -> bool:
    """A class of ours (any of that name) binds the member, itself or through a base of ours."""
    for node in product_classes().get(class_name, []):
        if member in bound(node.body):
            return True
        if any(isinstance(b, ast.Name) and has_member(b.id, member) for b in node.bases):
            return True
    return False


def test_every_method_the_readme_names_exists() -> None:
    """`Class.method` of our classes, and `b24.call_many`, `simulator.faults(...)`,
    `job.latest_result()` on the objects the README calls so (both clients for `b24`)."""
    objects: dict[str, tuple[type, ...]] = {"b24": (B24, AsyncB24), "simulator": (SimClient,), "job": (Job,)}
    cited = matching(re.compile(r"(\w+\.\w+)(?:\(.*\))?"))
    methods = [name for name in cited if name.split(".")[0] in objects.keys() | product_classes().keys()]
    assert "b24.call_many" in methods and "EchoGuard.consume" in methods
    absent = []
    for name in methods:
        receiver, member = name.split(".")
        classes = objects.get(receiver)
        if not (all(hasattr(c, member) for c in classes) if classes else has_member(receiver, member)):
            absent.append(name)
    assert absent == []
    assert not has_member("EchoGuard", "no_such_method")


def key_names() -> set[str]:
    """Every key `shared.keys.Keys` makes, in namespace `<ns>`, each argument `<>`."""
    keys, made = Keys("<ns>"), set()
    for name, member in vars(Keys).items():
        if isinstance(member, property):
            made.add(getattr(keys, name))
        elif inspect.isfunction(member) and not name.startswith("_"):
            required = [p for p in inspect.signature(member).parameters.values() if p.default is p.empty]
            made.add(member(keys, *["<>"] * (len(required) - 1)))
    return {key for key in made if isinstance(key, str)}


def test_every_redis_key_the_readme_names_is_one_of_ours() -> None:
    cited = sorted({m for span in spans() for m in re.findall(r"<ns>:[^\s`)]*", span)})
    assert "<ns>:defer-horizon" in cited
    ours = key_names()
    assert "<ns>:offline:<>:lock" in ours and "<ns>:events" in ours
    assert [key for key in cited if re.sub(r"<(?!ns>)[^>]+>", "<>", key) not in ours] == []


# --- settings, metrics -----------------------------------------------------------------------


def test_every_setting_the_readme_names_is_read() -> None:
    read = setting_fields().keys()
    cited = set(SETTING.findall(README))
    assert {"B24PIPE_TOKEN_KEYS", "REDIS_URL", "B24_CLIENT_ID"} <= cited
    assert sorted(cited - read) == []


def setting_fields() -> dict[str, FieldInfo]:
    """Each environment variable `Settings` reads, with its field."""
    found: dict[str, FieldInfo] = {}
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        found |= {str(choice): field for choice in getattr(alias, "choices", [alias]) if choice}
    return found


def documented_defaults() -> list[tuple[str, str]]:
    """(variable, default) of each row of the README's settings tables; a row naming two
    variables (`A` / `B`) gives two defaults the same way (`1000 / 8`)."""
    rows: list[tuple[str, str]] = []
    for cells in re.findall(r"^\| (`[A-Z][^|]*) \| [^|]* \| ([^|]*) \|$", README, re.MULTILINE):
        names = SETTING.findall(cells[0].split("(or")[0])
        rows += zip(names, [d.strip() for d in cells[1].split(" / ")], strict=False)
    return rows


def same_default(documented: str, value: object) -> bool | None:
    """Whether the README's default is the code's; None for a default told in words."""
    first = documented.strip("`").split(" ")[0].rstrip(":")
    if re.fullmatch(r"[0-9.]+", first):
        return isinstance(value, int | float) and float(first) == value
    if first in ("off", "none", "empty"):
        return not value
    if documented.strip("`") == first and isinstance(value, str):
        return first == value
    return None


def test_every_default_the_readme_gives_is_the_codes() -> None:
    fields = setting_fields()
    rows = documented_defaults()
    assert ("B24PIPE_MAX_FORM_DEPTH", "8") in rows and ("B24PIPE_ACK", "written") in rows
    judged = {name: same_default(d, fields[name].get_default(call_default_factory=True)) for name, d in rows}
    assert len([v for v in judged.values() if v is not None]) >= 40
    assert [name for name, same in judged.items() if same is False] == []
    assert same_default("300", 600) is False and same_default("`json`", "auto") is False


@cache
def registered_metrics() -> frozenset[str]:
    """Metric names (string constants) of the modules that use prometheus_client."""
    names = set()
    for _, tree in _modules():
        uses = any(
            isinstance(node, ast.ImportFrom | ast.Import)
            and "prometheus_client" in (getattr(node, "module", None) or "", *(a.name for a in node.names))
            for node in ast.walk(tree)
        )
        if uses:
            names |= {
                node.value
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(r"b24pipe_[a-z0-9_]+", node.value)
            }
    return frozenset(names)


def is_registered(metric: str) -> bool:
    stems = {metric} | {metric.removesuffix(s) for s in METRIC_SUFFIXES}
    stems |= {stem.removesuffix("_total") for stem in stems}
    return any(stem in registered_metrics() or f"{stem}_total" in registered_metrics() for stem in stems)


def cited_metrics() -> list[str]:
    """Metric names in code spans, alone (`b24pipe_loop_cut_total{event}`) or in a query."""
    found = {m for span in spans() for m in re.findall(rf"(?<![\w/.-]){METRIC.pattern}", span)}
    return sorted(found - NOT_METRICS.keys())


def test_every_metric_the_readme_names_is_registered() -> None:
    metrics = cited_metrics()
    assert "b24pipe_rest_calls_total" in metrics
    assert [m for m in metrics if not is_registered(m)] == []
    assert not is_registered("b24pipe_no_such_metric_total")
    for name, (path, definition) in NOT_METRICS.items():
        assert definition in (ROOT / path).read_text(), f"{name} is not what the README says"


# --- make targets, commands ------------------------------------------------------------------


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))


def commands(prefix: str) -> list[str]:
    """Spans and code-block lines that run `prefix`, from the word on."""
    lines = [*spans(), *(line for body in blocks("sh") for line in body.splitlines())]
    found = []
    for line in lines:
        at = re.search(rf"(?:^|[\s(=.]|/bin/)(?<!-t ){prefix} ", line)  # not docker's -t <image>
        if at:
            found.append(line[at.end() - len(prefix) - 1 :].split("#")[0].split("|")[0].strip())
    return sorted(set(found))


def test_every_make_target_the_readme_names_exists() -> None:
    targets = make_targets()
    cited = []
    for command in commands("make"):
        words = [w for w in command.split()[1:] if "=" not in w and not w.startswith("-")]
        if words and re.fullmatch(r"[\w*-]+", words[0]):
            cited.append(words[0])
    assert "bench-storm" in cited and "test" in cited
    assert [t for t in cited if not fnmatch.filter(targets, t)] == []


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def unknown_in(command: str) -> list[str]:
    """The words of one `b24pipe ...` command line its parser does not know: a subcommand
    where one is needed, or an option."""
    parser: argparse.ArgumentParser = build_parser()
    try:
        words = shlex.split(command.replace("[", " ").replace("]", " ").replace("…", ""))[1:]
    except ValueError:
        words = command.split()[1:]
    unknown = []
    for word in words:
        sub = _subcommands(parser)
        if sub and not word.startswith("-"):
            if word not in sub:
                if word != "...":
                    unknown.append(word)
                break
            parser = sub[word]
        elif word.startswith("--") and word.split("=")[0] not in parser._option_string_actions:
            unknown.append(f"{parser.prog} {word}")
    return unknown


def test_every_command_and_option_the_readme_names_exists() -> None:
    cited = commands("b24pipe")
    assert any(c.startswith("b24pipe portals doctor") for c in cited)
    assert unknown_in("b24pipe portals nothing") == ["nothing"]
    assert unknown_in("b24pipe worker --no-such-option") == ["b24pipe worker --no-such-option"]
    assert {c: u for c in cited if (u := unknown_in(c))} == {}


# --- tests -----------------------------------------------------------------------------------


def test_every_test_the_readme_names_exists() -> None:
    cited = matching(re.compile(r"(test_\w+)"))
    assert cited
    tests = {p.stem for p in (ROOT / "tests").rglob("test_*.py")}
    functions = {
        node.name
        for _, tree in _modules(("tests",))
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
    }
    assert [name for name in cited if name not in tests | functions] == []
