"""REST 3.0's `Idempotency-Key`: the answer to a keyed request, kept 24 h.

As on Bitrix24: a key is 1-255 printable ASCII characters; answers are kept per app x user x
method; the same key with the same body is answered from the store without running the
method again; with another body, 422. (Two requests with the same key at the same moment
may both run on Bitrix24; here requests are handled one at a time, so they do not.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

KEEP_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Stored:
    digest: str
    status: int
    body: dict[str, Any]
    stored_at: float


def valid_key(key: str) -> bool:
    return 1 <= len(key) <= 255 and all(32 < ord(ch) < 127 for ch in key)


def digest_of(params: dict[str, Any]) -> str:
    """The request body as the key's owner sent it (without `auth`: a refreshed token is the
    same request)."""
    return hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()


class IdempotencyStore:
    def __init__(self) -> None:
        self._answers: dict[tuple[str, int, str, str], Stored] = {}

    def lookup(self, owner: tuple[str, int, str, str], now: float) -> Stored | None:
        found = self._answers.get(owner)
        if found is not None and now - found.stored_at > KEEP_SECONDS:
            del self._answers[owner]
            return None
        return found

    def keep(self, owner: tuple[str, int, str, str], stored: Stored) -> None:
        self._answers[owner] = stored
