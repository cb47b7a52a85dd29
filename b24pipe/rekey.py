"""Re-sealing stored secrets under the current token key, so an old key can be retired.

`B24PIPE_TOKEN_KEYS` rotates without downtime: the first key seals, every key opens. Tokens
re-seal themselves on each refresh, but a portal idle for weeks keeps its old ciphertexts,
and so the old key, until its keep-alive refresh. `rekey` re-seals every portal record and
pending install at once (`b24pipe portals rekey`), each record atomically and never under a
running refresh (`shared/lua/portalstore_reseal.lua` says why).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis

from shared import portalstore as store
from shared.crypto import DecryptError, TokenCipher
from shared.keys import Keys
from shared.portals import Portal, as_text

SEALED_FIELDS = ("access_token", "refresh_token", "webhook_url")
_ATTEMPTS = 5  # per record: a refresh or a token change in between makes us read again
_BUSY_PAUSE = 0.2  # seconds: a refresh holds its lock for one HTTP round trip


@dataclass
class RekeyReport:
    resealed: int = 0  # records written under the current key
    current: int = 0  # records that needed nothing
    busy: list[str] = field(default_factory=list)  # member ids still changing: run again
    unreadable: list[str] = field(default_factory=list)  # sealed with a key no longer configured


def reseal(portal: Portal, cipher: TokenCipher) -> list[tuple[str, str, str]]:
    """(field, ciphertext, new ciphertext) for each secret sealed under another key than the
    current one. Raises `DecryptError` when one cannot be opened with the configured keys."""
    changes = []
    for name in SEALED_FIELDS:
        sealed = str(getattr(portal, name))
        if sealed and cipher.key_of(sealed) != cipher.current_key:
            context = portal.context(name)
            changes.append((name, sealed, cipher.encrypt(cipher.decrypt(sealed, context), context)))
    return changes


def _records(client: redis.Redis, keys: Keys) -> Iterator[tuple[str, str]]:
    """(member id, hash key) of every portal record and pending install."""
    for raw in client.smembers(keys.portals):
        member_id = as_text(raw)
        yield member_id, keys.portal(member_id)
    for raw in client.scan_iter(match=keys.pending_install("*", "*"), count=1000):
        key = as_text(raw)
        yield key.split(":")[-2], key  # <ns>:pending:<member id>:<digest>


def rekey(client: redis.Redis, keys: Keys, cipher: TokenCipher) -> RekeyReport:
    report = RekeyReport()
    for member_id, key in _records(client, keys):
        for _ in range(_ATTEMPTS):
            raw = client.hgetall(key)
            if not raw:
                break  # purged meanwhile: nothing left to seal
            try:
                changes = reseal(Portal.from_hash(raw), cipher)
            except DecryptError:
                report.unreadable.append(member_id)
                break
            if not changes:
                report.current += 1
                break
            written = store.run(client, store.write_resealed(keys, member_id, key, changes))
            if written == 1:
                report.resealed += 1
                break
            if written == -1:
                time.sleep(_BUSY_PAUSE)
        else:
            report.busy.append(member_id)
    return report
