"""Optional OpenTelemetry tracing: one trace per event, from the ingress request through the
queue to each handler and each REST call (`pip install 'b24pipe[otel]'`).

Configured by the standard variables: `OTEL_TRACES_EXPORTER` (`otlp` or `console`; unset or
`none`: tracing stays off), `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_*`,
`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_SDK_DISABLED`
(read by the OpenTelemetry SDK itself). Off, every helper here is a constant-time no-op.

The ingress continues an inbound W3C `traceparent` and writes the trace context into the
queued event (field `trace`, ignored by the Event model); the worker's span of the event is
its child. Spans carry only ids, names and statuses: never tokens, URLs (a webhook URL is a
secret), request bodies or exception messages (they may quote data); errors are recorded as
the exception type only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

TRACE_FIELD = "trace"
_EXPORTERS = ("otlp", "console")

try:  # the optional extra
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # pragma: no cover - without the extra tracing is simply off
    trace = None  # type: ignore[assignment]

_tracer: Any = None
_provider: Any = None


def enabled() -> bool:
    return _tracer is not None


def configure(service: str, exporter: Any = None) -> bool:
    """Install a tracer provider when the extra is installed and OTEL_TRACES_EXPORTER names an
    exporter (or `exporter`, a SpanExporter, is given: tests). Returns whether tracing is on."""
    global _tracer, _provider
    if trace is None or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    chosen = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if exporter is None and chosen not in _EXPORTERS:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or service})
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif chosen == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer, _provider = provider.get_tracer("b24pipe"), provider
    return True


def shutdown() -> None:
    """Flush and stop tracing (tests; a process's provider flushes at exit by itself)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


@contextmanager
def span(
    name: str,
    attributes: Mapping[str, str | int] | None = None,
    *,
    carrier: Mapping[str, str] | None = None,
    kind: str = "internal",
) -> Iterator[Any]:
    """A span named `name`, child of the current one, or of the context in `carrier` (W3C
    headers: an inbound request's, or the one queued with the event). Yields the span (None
    when tracing is off). An exception is recorded by its type only, then re-raised."""
    if _tracer is None:
        yield None
        return
    context = propagate.extract(carrier) if carrier is not None else None
    with _tracer.start_as_current_span(
        name,
        context=context,
        kind=getattr(SpanKind, kind.upper()),
        attributes=dict(attributes or {}),
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            current.set_attribute("error.type", type(exc).__name__)
            raise


def carrier() -> dict[str, str]:
    """The current trace context as W3C headers, to queue with an event ({} when off)."""
    if _tracer is None:
        return {}
    found: dict[str, str] = {}
    propagate.inject(found)
    return found
