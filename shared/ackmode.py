"""What a 200 waits for (`B24PIPE_ACK`), decided from what the Redis server offers.

- `written`: Redis ran the write (with `appendfsync everysec` a host crash can lose about
  the last second of acknowledged events);
- `fsync`: the write is on the primary's disk: verified `appendfsync always` (Redis fsyncs
  before it replies, once per event-loop pass), else `WAITAOF 1 0` where the server has it;
- `replica`: at least one replica has the write (`WAIT 1`): a failover to it keeps it.

The ingress sends the wait in the same write as the batch's scripts: one wait per batch,
never per event (group commit). Pure decisions here; the enqueuer and `/readyz` do the I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ACK_MODES = ("written", "fsync", "replica")


@dataclass(frozen=True)
class AckPlan:
    """How one mode is honoured on one server. `verb` is the command sent after each
    batch (None: its reply already means the mode holds); `problem` says why the server
    cannot honour the mode (every batch then fails: 503, and `/readyz` fails)."""

    mode: str
    verb: str | None = None
    problem: str | None = None

    def command(self, timeout_ms: int) -> list[str | int] | None:
        """The wait to send after a batch, bounded by the batch's deadline (never 0: for
        WAIT that means forever)."""
        timeout_ms = max(1, timeout_ms)
        if self.verb == "WAIT":
            return ["WAIT", 1, timeout_ms]
        if self.verb == "WAITAOF":
            return ["WAITAOF", 1, 0, timeout_ms]
        return None

    def confirmed(self, reply: object) -> bool:
        """Whether the wait's reply says the batch reached what the mode asks for."""
        if self.verb == "WAIT":
            return isinstance(reply, int) and reply >= 1
        if self.verb == "WAITAOF":
            return isinstance(reply, list) and len(reply) == 2 and int(reply[0]) >= 1
        return True


def plan(mode: str, config: Mapping[str, str] | None, has_waitaof: bool) -> AckPlan:
    """The plan for `mode` given the server's CONFIG answer (None where CONFIG is refused,
    as on managed services) and whether it has WAITAOF (Redis 7.2+, Valkey)."""
    if mode == "written":
        return AckPlan(mode)
    if mode == "replica":
        return AckPlan(mode, "WAIT")
    if config is not None and config.get("appendfsync") == "always":
        return AckPlan(mode)
    if has_waitaof:
        return AckPlan(mode, "WAITAOF")
    return AckPlan(
        mode, problem="B24PIPE_ACK=fsync needs appendfsync always on this server (it has no WAITAOF)"
    )
