"""A simulated Bitrix24 with the app installed: what `b24pipe run`'s demo and the pytest
plugin (b24pipe.pytest_plugin) both stand on.

- `launch_simulator` starts `b24pipe sim` as a child process and waits until it answers.
- `pipeline_env` is the settings a pipeline needs to treat that simulator as its Bitrix24.
- `install_app` installs the app on a new simulated portal through the real install flow:
  the simulator POSTs ONAPPINSTALL to the ingress, which verifies it with the authorization
  server (`app.info`, `user.admin`) and stores the portal; then the portal's events are bound
  with `b24pipe portals bind` (the same diff `event.get` → `event.bind`; a no-op once an
  install binds by itself).
- `AppPortal` is that portal as a test or the demo uses it: a person's edits, reads through
  an inbound webhook (never the app's own tokens, which the pipeline rotates), and
  `wait_handled`, which returns once every event caused so far has been run by the workers.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import redis

from b24pipe.sim.client import Installation, SimClient, SimPortal
from shared import rqkeys
from shared.keys import Keys

# The simulator's users (its default portal): 1 is the admin who installs the app (and whom
# the app's REST writes act as), 2 is a colleague, the "person" whose edits a demo makes.
PERSON = 2


class SimulatorError(Exception):
    """The simulator, an install or a bind did not do what was asked (one line, no secret)."""


def wait_answering(url: str, process: subprocess.Popen[bytes], what: str, deadline: float = 60.0) -> None:
    """Poll `url` until it answers; SimulatorError if `process` exits or `deadline` passes."""
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        if process.poll() is not None:
            raise SimulatorError(f"{what} exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (a local http:// URL we built)
                return
        except OSError:
            time.sleep(0.05)
    raise SimulatorError(f"{what} did not answer in time")


def wait_until_up(url: str, process: subprocess.Popen[bytes], deadline: float = 20.0) -> None:
    wait_answering(f"{url}/_sim/health", process, "the simulator", deadline)


def launch_simulator(
    port: int,
    client_id: str,
    client_secret: str,
    output: IO[bytes] | int | None,
    token_ttl: int = 3600,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen[bytes], SimClient]:
    """`b24pipe sim` on 127.0.0.1:`port`, answering; its stdout and stderr go to `output`."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "b24pipe.sim",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--client-id",
            client_id,
            "--client-secret",
            client_secret,
            "--token-ttl",
            str(token_ttl),
        ],
        cwd=cwd,
        stdout=output,
        stderr=subprocess.STDOUT,
        # out of the terminal's process group: a Ctrl-C must not take Bitrix24 away from
        # workers still finishing their jobs; the caller stops it (stop_simulator) after them
        start_new_session=True,
    )
    client = SimClient(f"http://127.0.0.1:{port}", client_id, client_secret)
    try:
        wait_until_up(client.base_url, process)
    except Exception:
        stop_simulator(process)
        raise
    return process, client


def stop_simulator(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def pipeline_env(sim: SimClient, public_url: str) -> dict[str, str]:
    """Settings of a pipeline whose Bitrix24 is `sim`, reachable by it at `public_url`."""
    return {
        "B24_OAUTH_URL": sim.base_url,
        "B24_CLIENT_ID": sim.client_id,
        "B24_CLIENT_SECRET": sim.client_secret,
        "B24PIPE_ALLOW_HTTP": "1",
        "B24PIPE_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "B24PIPE_PUBLIC_URL": public_url.rstrip("/"),
    }


@dataclass
class AppPortal:
    """A simulated portal with the app installed (see the module docstring)."""

    sim: SimClient
    installation: Installation
    webhook: str
    keys: Keys
    redis: redis.Redis

    @property
    def member_id(self) -> str:
        return self.installation.member_id

    @property
    def domain(self) -> str:
        return self.installation.domain

    # -- a person in the portal's UI ------------------------------------------------------------
    def add(self, fields: dict[str, Any], entity: str = "deal", user_id: int = PERSON) -> int:
        """A person creates a deal (or lead); its id."""
        done = self.sim.change_entity(self.member_id, entity, "add", fields=fields, user_id=user_id)
        return int(done["id"])

    def edit(self, item_id: int, fields: dict[str, Any], entity: str = "deal", user_id: int = PERSON) -> None:
        """A person changes a deal (or lead): Bitrix24 sends ONCRM<ENTITY>UPDATE to the app."""
        self.sim.change_entity(self.member_id, entity, "update", id=item_id, fields=fields, user_id=user_id)

    def storm(
        self, changes: list[dict[str, Any]], entity: str = "deal", user_id: int = PERSON
    ) -> dict[str, Any]:
        """Many changes ([{action, id, fields}]) at once, delivered as fast as the ingress takes them."""
        return self.sim.apply_changes(self.member_id, changes, entity=entity, user_id=user_id)

    def get(self, item_id: int, entity: str = "deal") -> dict[str, Any]:
        """The entity as the portal holds it now (read through an inbound webhook)."""
        answer = self.sim.call(f"{self.webhook}crm.{entity}.get.json", {"id": item_id})
        if answer.status != 200:
            raise SimulatorError(f"crm.{entity}.get {item_id} answered {answer.status}: {answer.body}")
        result: dict[str, Any] = answer.body["result"]
        return result

    # -- the pipeline's side ------------------------------------------------------------------------
    def busy(self) -> int:
        """Jobs the pipeline still has to run: queued, taken by a worker, or running."""
        count = 0
        for queue in self.keys.queues:
            count += int(self.redis.llen(rqkeys.queue(queue))) + int(self.redis.zcard(rqkeys.started(queue)))
        for key in self.redis.scan_iter(match=self.keys.inflight("*"), count=1000):
            count += int(self.redis.llen(key))
        return count

    def wait_handled(self, timeout: float = 30.0) -> None:
        """Return once every event caused so far (echoes of the handlers' own writes included)
        has been delivered by the portal and run by the workers; a handler's scheduled retry
        does not count as pending. Raises SimulatorError past `timeout`."""
        until = time.monotonic() + timeout
        quiet = None
        while time.monotonic() < until:
            sent = self.sim.wait_events(self.member_id)
            state = (sent["events_sent"], sent["events_failed"])
            if self.busy() == 0:
                if state == quiet:
                    return  # idle twice with nothing delivered in between: settled
                quiet = state
            else:
                quiet = None
            time.sleep(0.05)
        raise SimulatorError(f"portal {self.member_id}: events still being handled after {timeout} s")

    def wait_until(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        until = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > until:
                raise SimulatorError(f"condition not met within {timeout} s")
            time.sleep(0.05)


def install_app(
    sim: SimClient,
    env: dict[str, str],
    connection: redis.Redis,
    keys: Keys,
    portal: SimPortal | None = None,
    **portal_options: Any,
) -> AppPortal:
    """Install the app on `portal` (default: a new one, `portal_options` as `create_portal`'s)
    through the real install flow (module docstring); `env` is the pipeline's environment
    (its B24PIPE_PUBLIC_URL is the handler URL)."""
    portal = portal or sim.create_portal(**portal_options)
    installation = sim.install(portal.member_id, handler_url=f"{env['B24PIPE_PUBLIC_URL']}/b24/events")
    answered = [d.get("status") for d in installation.deliveries]
    if answered != [200]:
        raise SimulatorError(f"the ingress answered the install with {answered}, not [200]")
    for attempt in range(3):
        # a worker binding after the install at the same moment can make one `event.bind`
        # fail as "already binded"; the next diff then finds nothing left to do
        bound = subprocess.run(
            [sys.executable, "-m", "b24pipe", "portals", "bind", portal.member_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if bound.returncode == 0:
            break
        if attempt == 2:
            raise SimulatorError(f"b24pipe portals bind failed: {bound.stderr.strip()}")
    webhook = sim.add_webhook(portal.member_id, user_id=1)
    return AppPortal(sim, installation, webhook, keys, connection)
