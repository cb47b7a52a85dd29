"""Hostile input at a real `b24pipe ingress` process (real Redis, loopback only): odd
charsets and content encodings, numbers out of range, slow and vanishing clients. Every
malformed request gets a 4xx, never a 500; clients trickling their request cannot take the
in-flight slots valid events need; the log gets one counted line, not a traceback each."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http.client
import json
import re
import resource
import socket
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis
from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st

from b24pipe.redisserver import free_port
from b24pipe.testing.ingress import body, ingress_process, metrics_text, post_event, seed_portal
from shared.keys import Keys
from shared.settings import Settings
from tests.conftest import PrivateRedis

TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
FORM = "application/x-www-form-urlencoded"
ROOT = Path(__file__).resolve().parents[2]
BAD_CHARSETS = [
    "base64",
    "bz2",
    "hex",
    "zlib",
    "uu",
    "quopri",
    "rot13",
    "punycode",
    "utf-7",
    "utf-16",
    "nope",
]
ROUTES = ["/b24/events", "/b24/install"]


class Edge:
    """A running ingress: its port and its log file."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log

    def post(
        self, path: str, payload: bytes, headers: dict[str, str] | dict[str, bytes]
    ) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("POST", path, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def lines(self) -> list[dict[str, object]]:
        parsed = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                parsed.append(json.loads(line))
            except ValueError:
                parsed.append({"msg": line, "unparsed": True})
        return parsed

    def assert_no_traceback(self) -> None:
        text = self.log.read_text(errors="replace")
        assert "Traceback" not in text and "Error handling request" not in text, text[-3000:]
        assert TOKEN not in text


@pytest.fixture
def edge(base_env: dict[str, str], r: redis.Redis, keys: Keys, tmp_path: Path) -> Iterator[Edge]:
    seed_portal(r, keys, "m1", TOKEN)
    port = free_port()
    env = {**base_env, "B24PIPE_MAX_INFLIGHT": "20", "B24PIPE_READ_TIMEOUT": "2"}
    log = tmp_path / "ingress.log"
    with ingress_process(env, port, log_path=log):
        yield Edge(port, log)


def _valid(entity: int = 759, **auth: str) -> bytes:
    return body("m1", TOKEN, entity=entity, **auth).encode()


def test_odd_charsets_and_encodings_get_415_on_both_routes(edge: Edge) -> None:
    for path in ROUTES:
        for charset in BAD_CHARSETS:
            for media in (FORM, "application/json"):
                status, _ = edge.post(path, _valid(), {"Content-Type": f"{media}; charset={charset}"})
                assert status == 415, (path, charset, media, status)
        for encoding, payload in (
            ("gzip", b"not gzip at all"),
            ("gzip", gzip.compress(_valid())),
            ("deflate", zlib.compress(_valid())),
            ("br", b"\x00\x01"),
        ):
            status, _ = edge.post(path, payload, {"Content-Type": FORM, "Content-Encoding": encoding})
            assert status == 415, (path, encoding, status)
    # an ASCII-compatible charset is still read
    status, _ = edge.post("/b24/events", _valid(), {"Content-Type": f"{FORM}; charset=windows-1251"})
    assert status == 200
    edge.assert_no_traceback()


def test_compressed_bomb_is_refused_unread_and_valid_events_pass(edge: Edge) -> None:
    bomb = gzip.compress(b"a" * (64 << 20))  # 64 MiB inflated, ~64 KiB on the wire
    for _ in range(3):
        status, _ = edge.post("/b24/events", bomb, {"Content-Type": FORM, "Content-Encoding": "gzip"})
        assert status == 415
    status, _ = edge.post("/b24/events", _valid(), {"Content-Type": FORM})
    assert status == 200


@pytest.mark.parametrize(
    "fields",
    [
        {"ts": str(2**63)},
        {"ts": "99999999999999999999999"},
        {"user_id": str(2**64)},
        {"expires_in": str(2**63)},
    ],
)
def test_numbers_beyond_64_bits_get_400(edge: Edge, fields: dict[str, str]) -> None:
    ts = fields.pop("ts", None)
    form = body("m1", TOKEN, **fields)
    if ts is not None:
        form = form.replace("ts=1736405807", f"ts={ts}")
    status, answer = edge.post("/b24/events", form.encode(), {"Content-Type": FORM})
    assert status == 400, answer
    as_json = json.dumps({"event": "ONCRMDEALUPDATE", "ts": 2**64, "auth": {"member_id": "m1"}})
    status, _ = edge.post("/b24/events", as_json.encode(), {"Content-Type": "application/json"})
    assert status == 400
    edge.assert_no_traceback()


def test_install_page_is_bounded_like_events(edge: Edge) -> None:
    """Tens of thousands of fields: 400 after the field bound, not a dict of all of them."""
    many = "&".join(f"f{index}=x" for index in range(50_000)).encode()
    status, _ = edge.post("/b24/install", many, {"Content-Type": FORM})
    assert status == 400
    status, _ = edge.post("/b24/install", b"member_id=m1", {"Content-Type": f"{FORM}; charset=base64"})
    assert status == 415
    # a domain that is no host name is refused at once, never kept pending
    page = b"member_id=m9&AUTH_ID=abc&REFRESH_ID=def&APPLICATION_TOKEN=tok&AUTH_EXPIRES=3600"
    for domain in ("%ff%fe", "a%00b.ru", "x" * 300, "exa%20mple.com"):
        status, _ = edge.post(f"/b24/install?DOMAIN={domain}", page, {"Content-Type": FORM})
        assert status == 401, domain


def _trickler(port: int, path: str = "/b24/events") -> socket.socket:
    """A client that sent its headers and promises a body it sends a byte at a time."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {FORM}\r\nContent-Length: 5000\r\n\r\n"
    sock.sendall(head.encode())
    return sock


def _slow_header(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /b24/events HTTP/1.1\r\nHost: x\r\n")
    return sock


def _cut_off(sock: socket.socket, limit: float = 30) -> bytes | None:
    """Keep trickling until the server answers or closes (bounded): what it sent first
    (b"" for a close without an answer), None if it did neither."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            sock.sendall(b"a")
            return sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return b""
    return None


def test_slow_clients_hold_no_slots_and_are_cut_off(edge: Edge) -> None:
    """A cap of 20 slots, 40 clients trickling bodies and 40 trickling headers: every valid
    event is still accepted; each slow body gets a 408, each slow header a closed connection."""
    slow = [_trickler(edge.port) for _ in range(40)] + [_slow_header(edge.port) for _ in range(40)]
    try:
        for sock in slow[:40]:
            sock.sendall(b"a")
        answers = [edge.post("/b24/events", _valid(entity=n), {"Content-Type": FORM})[0] for n in range(30)]
        assert answers == [200] * 30
        ends = [_cut_off(sock) for sock in slow]
        assert all(end is not None and end.startswith(b"HTTP/1.1 408 ") for end in ends[:40]), ends[:40]
        assert ends[40:] == [b""] * 40
    finally:
        for sock in slow:
            sock.close()


def test_vanishing_clients_are_counted_not_traced(edge: Edge) -> None:
    for _ in range(25):
        sock = _trickler(edge.port)
        sock.sendall(b"event=ONCRM")
        sock.close()
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", edge.port)) as sock:
            sock.sendall(b"POST /b24/events HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
            sock.settimeout(10)
            assert sock.recv(4096).split(b"\r\n")[0].endswith(b" 400 Bad Request")
    deadline = time.monotonic() + 40
    kinds: dict[str, int] = {}
    while time.monotonic() < deadline and sum(kinds.values()) < 30:
        kinds = {}
        for line in edge.lines():
            if line.get("msg") == "edge errors":
                kinds[str(line["kind"])] = kinds.get(str(line["kind"]), 0) + int(str(line["count"]))
        time.sleep(0.2)
    assert kinds == {"client_disconnected": 25, "malformed_http": 5}
    edge.assert_no_traceback()


# --- the property test: whatever arrives, no 5xx but 503 -----------------------------------

_CODECS = ["utf-8", "latin-1", "cp1251", "koi8-r", "idna", "ascii", *BAD_CHARSETS, "x" * 50, "utf-8\x00"]
_MEDIA = [FORM, "application/json", "text/plain", "multipart/form-data; boundary=x", ""]
_ENCODINGS = [None, "identity", "gzip", "deflate", "br", "x-unknown"]


@st.composite
def _request(draw: st.DrawFn) -> tuple[str, dict[str, bytes], bytes]:
    path = draw(st.sampled_from(ROUTES))
    media = draw(st.sampled_from(_MEDIA))
    charset = draw(st.one_of(st.none(), st.sampled_from(_CODECS), st.text(max_size=12)))
    content_type = media if charset is None else f"{media}; charset={charset}"
    raw_type = content_type.encode("utf-8", "surrogatepass")  # any bytes but line breaks
    headers = {"Content-Type": raw_type} if not set(raw_type) & set(b"\r\n\x00") else {}
    encoding = draw(st.sampled_from(_ENCODINGS))
    if encoding is not None:
        headers["Content-Encoding"] = encoding.encode()
    number = draw(st.one_of(st.integers(), st.integers(min_value=2**63 - 2, max_value=2**65)))
    kind = draw(st.sampled_from(["valid", "ts", "user_id", "bytes", "json", "utf7"]))
    if kind == "valid":
        payload = _valid()
    elif kind == "ts":
        payload = body("m1", TOKEN, ts=0).replace("ts=0", f"ts={number}").encode()
    elif kind == "user_id":
        payload = _valid(user_id=str(number))
    elif kind == "json":
        payload = json.dumps({"event": "ONCRMDEALUPDATE", "ts": number, "auth": {"member_id": "m1"}}).encode()
    elif kind == "utf7":
        payload = b"event=X&auth[member_id]=m1&data[A]=+2D3-&auth[application_token]=" + TOKEN.encode()
    else:
        payload = draw(st.binary(max_size=300))
    if encoding == "gzip" and draw(st.booleans()):
        payload = gzip.compress(payload)
    event(f"kind={kind}")
    event(f"charset={'none' if charset is None else 'listed' if charset in _CODECS else 'random'}")
    return path, headers, payload


def test_property_no_5xx_but_503(edge: Edge) -> None:
    seen: dict[int, int] = {}

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(_request())
    def check(request: tuple[str, dict[str, bytes], bytes]) -> None:
        path, headers, payload = request
        status, answer = edge.post(path, payload, headers)
        seen[status] = seen.get(status, 0) + 1
        event(f"status={status}")
        target(float(status >= 400 and status != 401), label="refused, not for the token")
        assert status < 500 or status == 503, (status, path, headers, payload[:200], answer[:300])

    check()
    # the interesting branches were reached: accepted, refused as malformed, as unsupported
    assert {200, 400, 415} <= set(seen), seen
    edge.assert_no_traceback()


def test_out_of_descriptors_is_one_counted_line_and_recovers(
    base_env: dict[str, str], r: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    """At the open-file limit `accept()` fails: a count per interval in the log, not a line
    per attempt, and the ingress serves again once the slow clients are cut off."""
    seed_portal(r, keys, "m1", TOKEN)
    port = free_port()
    log = tmp_path / "ingress.log"
    env = {**base_env, "B24PIPE_READ_TIMEOUT": "2"}
    with ingress_process(env, port, log_path=log, open_files=64):
        edge = Edge(port, log)
        hogs = [_slow_header(port) for _ in range(120)]  # the backlog holds what is not accepted
        try:
            deadline = time.monotonic() + 40
            lines: list[dict[str, object]] = []
            while time.monotonic() < deadline:
                lines = [line for line in edge.lines() if line.get("kind") == "accept_failed"]
                if lines:
                    break
                time.sleep(0.2)
            assert lines and int(str(lines[0]["count"])) >= 1
        finally:
            for sock in hogs:
                sock.close()
        status = 0
        deadline = time.monotonic() + 30
        while status != 200 and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                status = edge.post("/b24/events", _valid(), {"Content-Type": FORM})[0]
        assert status == 200
        assert len(edge.lines()) < 30, edge.lines()[:40]
        edge.assert_no_traceback()


def _open_files_limit(pid: int) -> int:
    (line,) = [row for row in Path(f"/proc/{pid}/limits").read_text().splitlines() if "open files" in row]
    return int(line.split()[3])


def test_ingress_raises_a_low_soft_open_file_limit_to_what_its_cap_needs(
    base_env: dict[str, str], r: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    """A container or unit that starts the process at a soft limit of 256 (the hard one
    higher, as runtimes do; Kubernetes has no field for it): the ingress raises it to
    4 x B24PIPE_MAX_INFLIGHT + 100 itself, and says nothing."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard >= 4 * 500 + 100, f"this machine's hard open-file limit ({hard}) is too low for the test"
    log = tmp_path / "ingress.log"
    env = {**base_env, "B24PIPE_MAX_INFLIGHT": "500"}
    with ingress_process(env, free_port(), log_path=log, open_files=(256, hard)) as process:
        assert _open_files_limit(process.pid) == 4 * 500 + 100
    assert "open-file limit below" not in log.read_text()


def test_ingress_warns_when_the_hard_open_file_limit_is_too_low(
    base_env: dict[str, str], r: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    log = tmp_path / "ingress.log"
    with ingress_process(base_env, free_port(), log_path=log, open_files=(64, 512)) as process:
        assert _open_files_limit(process.pid) == 512  # as far as the hard limit allows
    warnings = [line for line in log.read_text().splitlines() if "open-file limit below" in line]
    assert len(warnings) == 1 and '"needed":' in warnings[0], log.read_text()


def test_shipped_unit_sizes_open_files_for_the_default_cap() -> None:
    unit = (ROOT / "deploy/systemd/b24pipe-ingress.service").read_text()
    found = re.search(r"^LimitNOFILE=(\d+)$", unit, re.MULTILINE)
    assert (
        found is not None and int(found.group(1)) >= 4 * Settings.model_fields["max_inflight"].default + 100
    )
    redis_conf = (ROOT / "deploy/redis.conf").read_text()
    assert "Bitrix24 retries" not in redis_conf and "Bitrix24 does not retry a 503" in redis_conf


def test_install_page_takes_a_slot_like_events(
    private_redis: PrivateRedis, private_env: dict[str, str], keys: Keys, tmp_path: Path
) -> None:
    """Every slot held (Redis stalled under 4 events of 4 portals: one portal alone would
    stop at half the slots): the install page gets the 503 page at once instead of a slot
    of its own."""
    members = [f"m{n}" for n in range(1, 5)]
    for member in members:
        seed_portal(private_redis.client(), keys, member, TOKEN)
    port = free_port()
    env = {**private_env, "B24PIPE_MAX_INFLIGHT": "4", "B24PIPE_ENQUEUE_TIMEOUT": "5"}

    async def scenario() -> int:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            assert (await post_event(session, port, body("m1", TOKEN, entity=1)))[0] == 200
            private_redis.pause()
            try:
                held = [
                    asyncio.create_task(post_event(session, port, body(member, TOKEN, entity=10)))
                    for member in members
                ]
                async with asyncio.timeout(30):
                    while "b24pipe_ingress_inflight 4.0" not in await metrics_text(session, port):
                        await asyncio.sleep(0.1)
                async with session.post(
                    f"http://127.0.0.1:{port}/b24/install",
                    data=b"member_id=m1",
                    headers={"Content-Type": FORM},
                ) as page:
                    status = page.status
                await asyncio.gather(*held)
            finally:
                private_redis.resume()
            return status

    with ingress_process(env, port, log_path=tmp_path / "ingress.log"):
        assert asyncio.run(scenario()) == 503
