"""Keep-alive refresh: renew the OAuth pair of portals idle long enough that their refresh
token could expire, and only those.

Bitrix24 refresh tokens expire (180 days now, 28 in older docs) and Bitrix24 may block apps
that refresh on a timer, so nothing is refreshed on a schedule: a portal whose pair was
issued less than `B24PIPE_KEEPALIVE_AFTER` ago (20 days) is never touched. To find the
others without reading every record, each save of a pair also writes its issue time into a
sorted set (`Keys.token_issued`: the refresh's compare-and-set, `portalstore.save_portal`);
the due portals are one range query on it.

Every worker's heartbeat thread calls `run`, but a lock held for one
`B24PIPE_KEEPALIVE_INTERVAL` (1 hour) and never released lets one worker per interval do it.
The refresh itself is the ordinary single-flight one (`TokenStore.refresh`), so a keep-alive
never races a refresh some handler started.
"""

from __future__ import annotations

import logging
import time

import redis

from shared.keys import Keys
from shared.logs import log
from shared.portals import as_text
from shared.settings import Settings
from workers.errors import AuthRevoked, B24Error, ConfigurationError, ReauthRequired
from workers.rest.tokens import TokenStore, keepalive_due

_log = logging.getLogger("b24pipe.keepalive")

MAX_PER_RUN = 500  # refreshes one run makes at most; the rest wait for the next interval


def claim_due(client: redis.Redis, keys: Keys, settings: Settings, now: float) -> list[str] | None:
    """The portals due for a keep-alive, if this process won this interval's lock (else None)."""
    # Never released: its expiry is what spaces the passes one interval apart.
    if not client.set(keys.keepalive_lock, "1", nx=True, ex=settings.keepalive_interval):
        return None
    cutoff = now - settings.keepalive_after
    members = client.zrangebyscore(keys.token_issued, "-inf", cutoff, start=0, num=MAX_PER_RUN)
    return [as_text(m) for m in members if isinstance(m, bytes | str)]


async def refresh_idle(tokens: TokenStore, members: list[str], now: float, after: float) -> list[str]:
    """Refresh each of `members` still due once its record is read (the index only finds
    candidates; the record is the truth). Returns the member ids refreshed."""
    refreshed = []
    for member_id in members:
        try:
            portal = await tokens.load(member_id)
        except (AuthRevoked, ReauthRequired):
            await tokens.unindex(member_id)  # nothing to keep alive until a new token arrives
            continue
        if not keepalive_due(portal, now, after):
            continue
        try:
            await tokens.refresh(portal)
        except (
            B24Error,
            ConfigurationError,
        ) as exc:  # invalid_grant is marked by refresh; anything else waits
            log(_log, logging.WARNING, "keep-alive refresh failed", member_id=member_id, code=exc.code)
            continue
        refreshed.append(member_id)
    return refreshed


def run(settings: Settings, client: redis.Redis, now: float | None = None) -> list[str]:
    """One keep-alive pass if it is this process's turn; the member ids refreshed."""
    from workers.rest.client import context_for  # the client's runtime only when there is work

    keys = Keys(settings.namespace)
    moment = time.time() if now is None else now
    members = claim_due(client, keys, settings, moment)
    if not members:
        return []
    rest = context_for(settings)
    refreshed = rest.runtime.run(refresh_idle(rest.tokens, members, moment, settings.keepalive_after))
    log(_log, logging.INFO, "keep-alive refreshes", due=len(members), refreshed=len(refreshed))
    return refreshed
