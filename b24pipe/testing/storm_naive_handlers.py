"""The naive way to handle the storm, for `make bench-storm` to compare with: one handler run
per event, two REST calls each (read the deal, write the field), a retry after a second on
503 (what the SDKs do), no loop guards, no coalescing, no shared limiter. It always writes,
so every write's echo comes back as a new event: it feeds on itself until stopped."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from b24pipe.testing.storms import comment_for


@dataclass
class NaiveCounts:
    requests: int = 0
    refused: int = 0  # 503 QUERY_LIMIT_EXCEEDED
    runs: int = 0
    seen: dict[str, str] = field(default_factory=dict)  # deal id -> title it was handled on


async def _call(
    session: aiohttp.ClientSession,
    endpoint: str,
    token: str,
    method: str,
    params: dict[str, Any],
    counts: NaiveCounts,
) -> Any:
    while True:
        counts.requests += 1
        async with session.post(f"{endpoint}{method}.json", json={**params, "auth": token}) as answer:
            body = await answer.json(content_type=None)
            if answer.status != 503:
                return body.get("result")
        counts.refused += 1
        await asyncio.sleep(1.0)


async def review_deal(
    session: aiohttp.ClientSession, endpoint: str, token: str, deal_id: str, counts: NaiveCounts
) -> None:
    """ONCRMDEALUPDATE, naively: read the deal, write the field."""
    deal = await _call(session, endpoint, token, "crm.deal.get", {"id": deal_id}, counts)
    await _call(
        session,
        endpoint,
        token,
        "crm.deal.update",
        {"id": deal_id, "fields": {"COMMENTS": comment_for(deal["TITLE"])}},
        counts,
    )
    counts.runs += 1
    counts.seen[str(deal_id)] = deal["TITLE"]
