"""OpenTelemetry (the `otel` extra), read with the SDK's in-memory exporter: one event is one
trace, from the ingress request (continuing an inbound `traceparent`) through the queue to
the handler and its REST call, and no span carries a token or secret."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Iterator

import pytest
import redis
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from b24pipe.sim.client import SimClient
from b24pipe.testing.ingress import FORM, body, serve
from shared import tracing
from shared.crypto import digest
from shared.keys import Keys
from shared.portals import AcceptedToken
from shared.settings import Settings, load_settings
from tests.support.clientkit import client_env, install
from workers.runner.worker import Worker

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    found = InMemorySpanExporter()
    assert tracing.configure("b24pipe-test", exporter=found)
    try:
        yield found
    finally:
        tracing.shutdown()


def _parent(span: ReadableSpan) -> int:
    assert span.parent is not None, f"{span.name} has no parent"
    return span.parent.span_id


def test_off_unless_an_exporter_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert not tracing.configure("b24pipe-test") and not tracing.enabled()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing.configure("b24pipe-test")


def test_one_trace_per_event_from_ingress_to_rest_without_secrets(
    exporter: InMemorySpanExporter,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    simulator: SimClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {**client_env(base_env, simulator), "B24PIPE_HANDLERS": "tests.support.trace_handlers"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    importlib.import_module("tests.support.trace_handlers")
    settings: Settings = load_settings()
    pair, member_id = install(simulator, r, env)
    r.hset(keys.app_tokens(member_id), digest(pair.application_token), AcceptedToken("app").encode())
    r.incr(keys.portals_version)  # the ingress accepts the portal's application token

    async def deliver() -> int:
        async with serve(settings) as client:
            answer = await client.post(
                "/b24/events",
                data=body(member_id, pair.application_token, event="ONTESTTRACE"),
                headers={**FORM, "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
            )
            return answer.status

    assert asyncio.run(deliver()) == 200
    assert Worker(settings, client=r, burst=True).work() == 0

    spans = {span.name: span for span in exporter.get_finished_spans()}
    ingress = spans["POST /b24/events"]
    event = spans["event ONTESTTRACE"]
    handler = spans["handler tests.support.trace_handlers.traced"]
    rest = spans["b24 profile"]
    assert {f"{span.context.trace_id:032x}" for span in (ingress, event, handler, rest)} == {TRACE_ID}
    assert ingress.kind is SpanKind.SERVER and _parent(ingress) == int(PARENT_ID, 16)
    assert event.kind is SpanKind.CONSUMER and _parent(event) == ingress.context.span_id
    assert _parent(handler) == event.context.span_id
    assert rest.kind is SpanKind.CLIENT and _parent(rest) == handler.context.span_id
    assert dict(ingress.attributes or {})["http.response.status_code"] == 200
    assert dict(event.attributes or {})["b24pipe.member_id"] == member_id

    secrets = [pair.application_token, pair.access_token, pair.refresh_token, env["B24PIPE_TOKEN_KEYS"]]
    for span in exporter.get_finished_spans():
        text = repr((span.name, dict(span.attributes or {}), [e.attributes for e in span.events]))
        assert not any(secret and secret in text for secret in secrets), span.name
