"""`make mutate`'s own logic (not the mutation run, which takes minutes): matching recorded
equivalent mutants by their diff, the score, the equivalents file, and bad arguments."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.mutation.mutate import (
    MODULES,
    ROOT,
    Equivalent,
    Report,
    changed_lines,
    function_of,
    load_equivalents,
    mark_equivalents,
    unused,
)

DIFF = """--- ingress/formparse.py
+++ ingress/formparse.py
@@ -1,3 +1,3 @@
 def _charset(charset):
-    return "utf-8" if name == "utf-8" else name
+    return "utf-8" if name == "UTF-8" else name
"""


def test_changed_lines_are_the_stripped_removed_and_added_lines() -> None:
    assert changed_lines(DIFF) == (
        'return "utf-8" if name == "utf-8" else name',
        'return "utf-8" if name == "UTF-8" else name',
    )


def test_recorded_equivalents_are_set_aside_from_the_score() -> None:
    a, b, c = (f"ingress.formparse.x__charset__mutmut_{n}" for n in (1, 2, 3))
    elsewhere = "ingress.formparse.x_parse_body__mutmut_4"  # the same lines in another function
    report = Report(
        "ingress/formparse.py", statuses={a: "killed", b: "survived", c: "survived", elsewhere: "survived"}
    )
    other = DIFF.replace('+    return "utf-8" if name == "UTF-8"', '+    return "UTF-8" if name == "utf-8"')
    report.diffs = {b: DIFF, c: other, elsewhere: DIFF}
    recorded = Equivalent(
        "ingress/formparse.py",
        "_charset",
        'return "utf-8" if name == "utf-8" else name',
        'return "utf-8" if name == "UTF-8" else name',
        "codecs.lookup(...).name of UTF-8 is 'utf-8'",
    )
    mark_equivalents(report, [recorded])
    assert list(report.equivalent) == [b]
    assert report.survivors == [c, elsewhere]
    assert report.score == 100 / 3  # 1 killed of 3 judged


def test_equivalents_that_set_no_mutant_aside_are_reported() -> None:
    name = "ingress.formparse.x__charset__mutmut_2"
    report = Report("ingress/formparse.py", statuses={name: "survived"}, diffs={name: DIFF})
    removed, added = changed_lines(DIFF)
    used = Equivalent("ingress/formparse.py", "_charset", removed, added, "the one that matched")
    moved = Equivalent("ingress/formparse.py", "parse_form", removed, added, "its code moved")
    elsewhere = Equivalent("workers/runner/acks.py", "_charset", removed, added, "a module not run")
    mark_equivalents(report, [used, moved, elsewhere])
    assert unused([report], [used, moved, elsewhere]) == [moved]


def test_function_of_a_mutant_name() -> None:
    assert function_of("ingress.formparse.x__int_key__mutmut_3") == "_int_key"
    assert function_of("ingress.tokencheck.x\u01c1TokenCache\u01c1stop__mutmut_1") == "TokenCache.stop"
    assert (
        function_of("workers.runner.outcome.x\u01c1Reschedule\u01c1__init____mutmut_2")
        == "Reschedule.__init__"
    )


def test_every_equivalent_names_a_mutated_module_and_a_reason() -> None:
    entries = load_equivalents()
    assert entries
    for entry in entries:
        assert entry.module in MODULES and entry.function, entry
        assert entry.removed and entry.added and entry.removed != entry.added, entry
        assert len(entry.reason) > 20, entry


def _functions(module: str) -> dict[str, list[str]]:
    """Each function of a module, named as `function_of` names it, and its stripped lines."""
    source = (ROOT / module).read_text("utf-8")
    lines = source.splitlines()
    found: dict[str, list[str]] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                end = child.end_lineno or child.lineno
                found[prefix + child.name] = [line.strip() for line in lines[child.lineno - 1 : end]]

    visit(ast.parse(source), "")
    return found


def test_every_equivalent_still_names_a_line_of_its_function() -> None:
    # an entry left behind when code moves matches nothing and hides nothing, but reads as
    # if the mutant it explained were still set aside
    stale = []
    for entry in load_equivalents():
        body = _functions(entry.module).get(entry.function, [])
        if not all(line.strip() in body for line in entry.removed.splitlines()):
            stale.append((entry.module, entry.function, entry.removed))
    assert stale == []


def test_an_unknown_module_is_refused_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.mutation.mutate", "workers/nope.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "unknown module 'workers/nope.py'" in done.stderr
