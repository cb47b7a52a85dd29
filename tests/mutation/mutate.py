"""`make mutate`: mutation testing of the modules whose decisions matter most (mutmut).

Each module is mutated on its own, against only the tests that own it, in a scratch copy of
the tree under `var/mutate/<module>/` (mutmut rewrites the sources it mutates, so the
checkout is never touched). One Redis server, started here, serves every run. The report
gives, per module, the mutants mutmut made, how many the tests killed, the mutants recorded
as equivalent in `tests/mutation/equivalent.toml` (matched by function and diff, so the
list survives renumbering) and the score without them; then each equivalent mutant with its
reason, and every other survivor with its diff.

Exit status: 0 when every module scores at least `--min-score` (90 %) and every recorded
equivalent of the mutated modules set a mutant aside, 1 otherwise, 2 on bad arguments. Not
part of `make test`: it takes minutes per module.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from b24pipe.redisserver import start_server

ROOT = Path(__file__).resolve().parents[2]
EQUIVALENTS = Path(__file__).with_name("equivalent.toml")

# module -> the tests that own it
MODULES: dict[str, list[str]] = {
    "ingress/formparse.py": ["tests/ingress/test_formparse.py", "tests/ingress/test_formparse_edges.py"],
    "workers/runner/outcome.py": [
        "tests/workers/runner/test_worker_decisions.py",
        "tests/workers/runner/test_retry_outcomes.py",
    ],
    "workers/runner/acks.py": ["tests/workers/runner/test_acks.py"],
    "ingress/tokencheck.py": ["tests/ingress/test_ingress_tokencheck.py", "tests/ingress/test_tokencache.py"],
    "workers/rest/ratelimit.py": [
        "tests/workers/rest/test_ratelimit.py",
        "tests/workers/rest/test_ratelimit_bucket.py",
    ],
    "workers/guards/coalesce.py": [
        "tests/workers/guards/test_coalesce.py",
        "tests/workers/guards/test_coalesce_edges.py",
    ],
    "workers/guards/loop.py": [
        "tests/workers/guards/test_guards.py",
        "tests/workers/guards/test_guards_edges.py",
    ],
    "workers/guards/writemap.py": [
        "tests/workers/guards/test_writemap.py",
        "tests/workers/guards/test_writemap_table.py",
    ],
    "workers/portals/offlinerows.py": ["tests/workers/portals/test_offline_units.py"],
}
COPIED = ["b24pipe", "shared", "workers", "ingress", "bench", "tests"]
KILLED = {"killed", "timeout", "segfault", "caught by type check"}

# Run in the scratch directory (mutmut reads its configuration from the working directory):
# print {mutant: [status, diff]} for one module, as JSON.
DUMP = """
import json, sys
from mutmut.mutation.data import SourceFileMutationData
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code
data = SourceFileMutationData(path=sys.argv[1])
data.load()
out = {}
for name, code in data.exit_code_by_key.items():
    status = status_by_exit_code[code]
    out[name] = [status, "" if status == "killed" else get_diff_for_mutant(name, path=sys.argv[1])]
print(json.dumps(out))
"""


@dataclass
class Equivalent:
    module: str
    function: str  # as `function_of` names it: "_int_key", "TokenCache.stop"
    removed: str
    added: str
    reason: str


def function_of(mutant: str) -> str:
    """The function a mutmut mutant name points into: `ingress.formparse.x__int_key__mutmut_3`
    -> `_int_key`, `ingress.tokencheck.x\u01c1TokenCache\u01c1stop__mutmut_1` -> `TokenCache.stop`."""
    mangled = mutant.rsplit(".", 1)[-1].rsplit("__mutmut_", 1)[0]
    if mangled.startswith("x\u01c1"):
        return ".".join(part for part in mangled[1:].split("\u01c1") if part)
    return mangled.removeprefix("x_")


@dataclass
class Report:
    module: str
    statuses: dict[str, str] = field(default_factory=dict)
    diffs: dict[str, str] = field(default_factory=dict)
    equivalent: dict[str, str] = field(default_factory=dict)  # mutant -> reason

    @property
    def killed(self) -> int:
        return sum(1 for s in self.statuses.values() if s in KILLED)

    @property
    def survivors(self) -> list[str]:
        return [m for m, s in self.statuses.items() if s not in KILLED and m not in self.equivalent]

    @property
    def score(self) -> float:
        judged = len(self.statuses) - len(self.equivalent)
        return 100.0 * self.killed / judged if judged else 0.0


def load_equivalents() -> list[Equivalent]:
    data = tomllib.loads(EQUIVALENTS.read_text("utf-8"))
    return [Equivalent(**entry) for entry in data.get("equivalent", [])]


def changed_lines(diff: str) -> tuple[str, str]:
    """The removed and added lines of a mutant's diff, stripped, for matching equivalents."""
    body = [line for line in diff.splitlines() if not line.startswith(("---", "+++"))]
    removed = "\n".join(line[1:].strip() for line in body if line.startswith("-"))
    added = "\n".join(line[1:].strip() for line in body if line.startswith("+"))
    return removed, added


def prepare(scratch: Path, module: str, tests: list[str]) -> None:
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for name in COPIED:
        shutil.copytree(ROOT / name, scratch / name, ignore=ignore)
    config = {
        "source_paths": ["shared", "workers", "ingress", "b24pipe"],
        "only_mutate": [module],
        "also_copy": ["bench"],
        "pytest_add_cli_args_test_selection": tests,
        "pytest_add_cli_args": ["-q", "-p", "no:cacheprovider"],
    }
    lines = ["", "[tool.mutmut]"] + [f"{key} = {json.dumps(value)}" for key, value in config.items()]
    (scratch / "pyproject.toml").write_text(
        (ROOT / "pyproject.toml").read_text("utf-8") + "\n".join(lines) + "\n"
    )


def run_module(scratch: Path, module: str, workers: int, env: dict[str, str], run: bool = True) -> Report:
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    log = scratch / "mutmut.log"
    if run:
        with log.open("w") as out:
            done = subprocess.run(
                ["nice", "-n", "15", mutmut, "run", "--max-children", str(workers)],
                cwd=scratch,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode != 0:
            print(f"{module}: mutmut failed (exit {done.returncode}), see {log}", file=sys.stderr)
    report = Report(module)
    dump = subprocess.run(
        [sys.executable, "-c", DUMP, module],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if dump.returncode != 0:
        print(f"{module}: reading mutmut's results failed: {dump.stderr.strip()}", file=sys.stderr)
        return report
    for name, (status, diff) in json.loads(dump.stdout).items():
        report.statuses[name] = status
        if status not in KILLED:
            report.diffs[name] = diff
    return report


def mark_equivalents(report: Report, equivalents: list[Equivalent]) -> None:
    for name, diff in report.diffs.items():
        removed, added = changed_lines(diff)
        function = function_of(name)
        for entry in equivalents:
            if (entry.module, entry.function, entry.removed.strip(), entry.added.strip()) == (
                report.module,
                function,
                removed,
                added,
            ):
                report.equivalent[name] = entry.reason
                break


def unused(reports: list[Report], equivalents: list[Equivalent]) -> list[Equivalent]:
    """Entries of the mutated modules that set no mutant aside: the code moved on, or a test
    now kills the mutant (then it was not equivalent)."""
    matched = {
        (rep.module, function_of(name), *changed_lines(rep.diffs[name]))
        for rep in reports
        for name in rep.equivalent
    }
    mutated = {rep.module for rep in reports}
    return [
        e
        for e in equivalents
        if e.module in mutated and (e.module, e.function, e.removed.strip(), e.added.strip()) not in matched
    ]


def print_report(reports: list[Report]) -> None:
    print("\n| module | mutants | killed | equivalent | survived | score |")
    print("| --- | --- | --- | --- | --- | --- |")
    for rep in reports:
        print(
            f"| `{rep.module}` | {len(rep.statuses)} | {rep.killed} | {len(rep.equivalent)} "
            f"| {len(rep.survivors)} | {rep.score:.1f} % |"
        )
    for rep in reports:
        for name, reason in rep.equivalent.items():
            print(f"EQUIVALENT {name}: {reason}")
    for rep in reports:
        for name in rep.survivors:
            print(f"\nSURVIVED {name} ({rep.statuses[name]})\n{rep.diffs.get(name, '').strip()}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make mutate", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("modules", nargs="*", help="modules to mutate (default: all of them)")
    parser.add_argument("--workers", type=int, default=2, help="mutmut children (default 2)")
    parser.add_argument("--min-score", type=float, default=90.0)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="report the last run's results again (after editing equivalents)",
    )
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown or args.workers < 1:
        problem = f"unknown module {unknown[0]!r}" if unknown else "--workers must be at least 1"
        print(f"make mutate: {problem} (modules: {', '.join(MODULES)})", file=sys.stderr)
        raise SystemExit(2)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    equivalents = load_equivalents()
    reports: list[Report] = []
    with tempfile.TemporaryDirectory(prefix="b24pipe-mutate-") as tmp:
        server = start_server(Path(tmp))
        env = {**os.environ, "REDIS_URL": server.url}
        try:
            for module in args.modules or list(MODULES):
                scratch = ROOT / "var" / "mutate" / module.replace("/", "_").removesuffix(".py")
                if not args.report_only:
                    prepare(scratch, module, MODULES[module])
                    print(f"mutating {module} against {' '.join(MODULES[module])} ...", flush=True)
                report = run_module(scratch, module, args.workers, env, run=not args.report_only)
                mark_equivalents(report, equivalents)
                reports.append(report)
        finally:
            server.stop()
    print_report(reports)
    left = unused([r for r in reports if r.statuses], equivalents)
    for entry in left:
        print(f"\nUNUSED equivalent in {entry.module} {entry.function}: {entry.removed} -> {entry.added}")
    failing = [r.module for r in reports if not r.statuses or r.score < args.min_score]
    if failing:
        print(f"\nbelow {args.min_score:.0f} %: {', '.join(failing)}", file=sys.stderr)
    if left:
        print(f"\n{len(left)} recorded equivalents set no mutant aside: drop them", file=sys.stderr)
    return 1 if failing or left else 0


if __name__ == "__main__":
    raise SystemExit(main())
