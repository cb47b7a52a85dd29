# b24pipe image: one image for every part (ingress, worker, status, failed, replay, sim).
#   docker build -t b24pipe .
#   docker run b24pipe ingress          (default)   docker run b24pipe worker --concurrency 2
# The build stage installs the package (with the otel extra: tracing stays off until
# OTEL_TRACES_EXPORTER is set) into a virtualenv; the final stage copies only that
# virtualenv onto a slim Python base: no compiler, no pip cache, no sources, no tests.

FROM python:3.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY b24pipe ./b24pipe
COPY ingress ./ingress
COPY workers ./workers
COPY shared ./shared
RUN python -m venv /opt/b24pipe \
    && /opt/b24pipe/bin/pip install --no-cache-dir ".[otel]" \
    && /opt/b24pipe/bin/pip uninstall --yes pip

FROM python:3.12-slim-bookworm
LABEL org.opencontainers.image.title="b24pipe" \
      org.opencontainers.image.description="Queue-backed event pipeline for Bitrix24 applications" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 b24pipe \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin b24pipe
COPY --from=build /opt/b24pipe /opt/b24pipe
ENV PATH=/opt/b24pipe/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8080 9100
# The ingress's liveness route; a worker container overrides it (deploy/compose.yaml checks
# the worker's /metrics port instead).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["b24pipe"]
CMD ["ingress", "--host", "0.0.0.0", "--port", "8080", "--processes", "2"]
