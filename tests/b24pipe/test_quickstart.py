"""The README's quickstart, run as written: its files (```python quickstart:<path>) are
written into an empty app directory and its commands (```sh quickstart, one per line; the
`quickstart-checkout` block in the clone) are run there with b24pipe's environment active
(its .venv/bin first on PATH) and nothing of b24pipe or Bitrix24 configured. A command that
serves (`make run`, `b24pipe run`) is given a free port (and, for make, its own ./var) and
must show a handled event in the live view, then stop cleanly on Ctrl-C; every other command
must exit 0."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from b24pipe.testing.workers import ROOT
from tests.support.runkit import Run, fresh_env

BLOCK = re.compile(r"^```(\w+) (quickstart[\w-]*)(?::(\S+))?\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def quickstart() -> list[tuple[str, str | None, str]]:
    """(kind, file path or None, text) of every marked block of the Quickstart section, in order."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [(kind, path or None, text) for _, kind, path, text in BLOCK.findall(section)]


def _env() -> dict[str, str]:
    env = fresh_env()
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}"
    return env


def _serve(app: Path, name: str, command: list[str]) -> None:
    run = Run(app, _env(), command, name=f"serve-{name}")
    try:
        run.wait("a handled event in the live view", lambda: run.handled() >= 1)
    finally:
        status = run.interrupt()
    assert "b24pipe.run: pipeline stopped" in run.logs() or '"msg":"pipeline stopped"' in run.logs(), (
        run.tail()
    )
    assert "handler failed" not in run.logs(), run.tail()
    if command[0] != "make":  # make itself reports the interrupt; b24pipe's own status counts
        assert status == 0, run.tail()


def test_the_quickstart_works_as_written(tmp_path: Path) -> None:
    blocks = quickstart()
    assert [kind for kind, _, _ in blocks].count("quickstart") >= 2, (
        "the quickstart's commands are not marked"
    )
    app = tmp_path / "app"
    app.mkdir()
    ran: list[str] = []
    for kind, path, text in blocks:
        if path is not None:
            (app / path).parent.mkdir(parents=True, exist_ok=True)
            (app / path).write_text(text)
            continue
        for line in filter(None, (raw.split("  #")[0].strip() for raw in text.splitlines())):
            if kind == "quickstart-checkout":
                assert line == "make run", f"only make run is expected in the clone, not {line!r}"
                var = tmp_path / "make-var"
                _serve(
                    app,
                    "make",
                    ["make", "-s", "-C", str(ROOT), "run", f"RUN_ARGS=--port {{port}} --var {var}"],
                )
            elif " b24pipe run" in f" {line}":
                _serve(app, str(len(ran)), ["bash", "-c", f"{line} --port {{port}}"])
            else:
                done = subprocess.run(
                    ["bash", "-c", line], cwd=app, env=_env(), capture_output=True, text=True, timeout=240
                )
                assert done.returncode == 0, f"{line}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            ran.append(line)
    assert ran == ["make run", "B24PIPE_HANDLERS=myapp.handlers b24pipe run", "pytest -q myapp"]
