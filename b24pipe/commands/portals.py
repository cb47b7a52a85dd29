"""`b24pipe portals list|show|add|bind|doctor|revoke|purge|rekey`: portal records by hand.

Secrets never come from arguments (they would end up in shell history and `ps`): `add`
reads them as a JSON object from a file or stdin (`--secrets-file PATH|-`):

    {"application_token": "...", "access_token": "...", "refresh_token": "...",
     "expires": 1736409407, "webhook_url": "https://<domain>/rest/<user>/<secret>/",
     "webhook_token": "..." | ["...", ...]}

every key optional, at least one secret required. `application_token` becomes the app's
accepted token (the previous one stops at once: a hand-set token is usually a response
to a leak); each `webhook_token` is accepted beside it (an outgoing webhook's own token);
`webhook_url` makes the portal an inbound-webhook portal (stored encrypted).

`revoke` stops accepting the portal's events at once (the ingress sees the version bump
within a second) and drops every stored secret; `purge` also deletes the record and data.
`rekey` re-seals every stored secret under the first `B24PIPE_TOKEN_KEYS` key (`b24pipe.rekey`).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis
from redis.exceptions import RedisError

from b24pipe.commands.doctor import health_block, stored_facts
from b24pipe.errors import CommandError, UsageError
from b24pipe.health import column, problems
from b24pipe.rekey import rekey
from shared import pausing
from shared import portalstore as store
from shared.crypto import TokenCipher, digest
from shared.errors import ConfigurationError
from shared.keys import Keys
from shared.logs import mask, scrub, security_event
from shared.outbound import HostPolicy, OutboundRefused
from shared.portals import AcceptedToken, Portal, Status
from shared.redisconn import command_redis
from shared.settings import Settings, require_token_keys

_MEMBER = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_SECRET_KEYS = ("application_token", "access_token", "refresh_token", "webhook_url", "webhook_token")
_TOKEN = re.compile(r"^[\x21-\x7e]{8,4096}$")
_CONNECTOR = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "portals", help="portal records: list, show, add, bind, doctor, revoke, pause, resume, purge, rekey"
    )
    actions = parser.add_subparsers(dest="action", required=True, parser_class=type(parser))

    listing = actions.add_parser("list", help="every known portal (and pending installs)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(run=run_list)

    show = actions.add_parser("show", help="one portal's record, without secrets")
    show.add_argument("member_id")
    show.add_argument(
        "--json", action="store_true", help="JSON output (the only format; accepted for symmetry)"
    )
    show.set_defaults(run=run_show)

    add = actions.add_parser("add", help="register a portal by hand (secrets from a file or stdin)")
    add.add_argument("--member-id", required=True)
    add.add_argument("--domain", required=True, help="the portal's host, e.g. example.bitrix24.com")
    add.add_argument("--client-endpoint", help="REST endpoint (default https://<domain>/rest/)")
    add.add_argument("--secrets-file", required=True, metavar="PATH|-", help="JSON object with the secrets")
    add.add_argument("--plan", default="", help="rate plan of this portal (default: B24PIPE_RATE_PLAN)")
    add.add_argument(
        "--auth-connector",
        metavar="ID",
        help="passed on the app's writes, so offline events bound with the same ID skip them",
    )
    add.add_argument(
        "--user-id",
        metavar="N",
        help="the Bitrix24 user the app writes as, for echo suppression (default: learnt at the first refresh)",
    )
    add.set_defaults(run=run_add)

    doctor = actions.add_parser(
        "doctor", help="one portal's health, each problem with its fix (exit 0 healthy, 1 not)"
    )
    doctor.add_argument("member_id")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(run=run_doctor)

    bind = actions.add_parser("bind", help="make the portal's event.bind registrations match the handlers")
    bind.add_argument("member_id")
    bind.set_defaults(run=run_bind)

    revoke = actions.add_parser("revoke", help="stop accepting the portal's events and drop its tokens")
    revoke.add_argument("member_id")
    revoke.set_defaults(run=run_revoke)

    pause = actions.add_parser("pause", help="keep accepting the portal's events but hold their processing")
    pause.add_argument("member_id")
    pause.set_defaults(run=run_pause)

    resume = actions.add_parser("resume", help="process a paused portal's held events, in order")
    resume.add_argument("member_id")
    resume.set_defaults(run=run_resume)

    purge = actions.add_parser("purge", help="revoke and delete every record and data of the portal")
    purge.add_argument("member_id")
    purge.set_defaults(run=run_purge)

    rekey = actions.add_parser(
        "rekey", help="re-seal every stored secret with the first B24PIPE_TOKEN_KEYS key"
    )
    rekey.add_argument("--json", action="store_true", help="machine-readable output")
    rekey.set_defaults(run=run_rekey)


# --- pure parts: input validation and output shaping -----------------------------------------


def member_id_arg(value: str) -> str:
    if not _MEMBER.match(value):
        raise UsageError(f"invalid member id {value!r}: letters, digits, '_', '.', '-' (1-128)")
    return value


def domain_arg(value: str) -> str:
    host = value.strip().lower().rstrip(".")
    if not _DOMAIN.match(host):
        raise UsageError(f"invalid domain {value!r}: give the portal's host name, e.g. example.bitrix24.com")
    return host


def _no_dns(host: str) -> list[str]:
    """At `add` time only the shape and host of an URL are checked: the REST client applies
    the full policy (with DNS) to every call it makes."""
    return []


def endpoint_arg(value: str, domain: str, settings: Settings, what: str) -> str:
    """An endpoint on the portal's own host (or an allowed one), HTTPS unless allowed."""
    try:
        return HostPolicy.from_settings(settings).check_url(value, (domain,), _no_dns)
    except OutboundRefused as exc:
        raise UsageError(f"{what}: {exc}") from None


def webhook_user(url: str) -> int:
    """The user an inbound webhook acts as (`https://D/rest/<user>/<secret>/`): the app's
    writes through it cause events by that user, which echo suppression keys on."""
    parts = [part for part in urlsplit(url).path.split("/") if part]
    return int(parts[1]) if len(parts) >= 3 and parts[0] == "rest" and parts[1].isdigit() else 0


def connector_arg(value: str) -> str:
    if not _CONNECTOR.match(value):
        raise UsageError(f"invalid --auth-connector {value!r}: letters, digits, '_', '.', '-' (1-64)")
    return value


def user_id_arg(value: str) -> int:
    if not value.isascii() or not value.isdigit() or not 0 < int(value) < 2**31:
        raise UsageError(f"invalid --user-id {value[:20]!r}: a positive whole number")
    return int(value)


def parse_secrets(text: str) -> dict[str, Any]:
    """The secrets object, validated; raises UsageError naming the problem (never a value)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise UsageError("secrets: not valid JSON") from None
    if not isinstance(value, dict):
        raise UsageError("secrets: expected a JSON object")
    unknown = sorted(set(value) - {*_SECRET_KEYS, "expires"})
    if unknown:
        raise UsageError(f"secrets: unknown key {unknown[0]!r}")
    for key in ("application_token", "access_token", "refresh_token", "webhook_url"):
        if key in value and (not isinstance(value[key], str) or not _TOKEN.match(value[key])):
            raise UsageError(f"secrets: {key} must be a non-empty printable string")
    webhook = value.get("webhook_token", [])
    webhooks = [webhook] if isinstance(webhook, str) else webhook
    if not isinstance(webhooks, list) or not all(isinstance(t, str) and _TOKEN.match(t) for t in webhooks):
        raise UsageError("secrets: webhook_token must be a string or a list of strings")
    value["webhook_token"] = webhooks
    expires = value.get("expires", 0)
    if isinstance(expires, bool) or not isinstance(expires, int) or expires < 0:
        raise UsageError("secrets: expires must be a unix time (integer)")
    if not any(value.get(key) for key in _SECRET_KEYS):
        raise UsageError("secrets: give at least one of " + ", ".join(_SECRET_KEYS))
    if value.get("refresh_token") and not value.get("access_token"):
        raise UsageError("secrets: refresh_token needs access_token")
    return value


def _read_secrets(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        with open(source, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(f"--secrets-file: cannot read {source}: {exc.strerror}") from None


def _token_row(token_digest: str, token: AcceptedToken) -> dict[str, object]:
    return {"digest": token_digest[:12], "kind": token.kind, "expires_at": token.expires_at}


# --- I/O -------------------------------------------------------------------------------------


def _client(settings: Settings) -> redis.Redis:
    return command_redis(settings)


def _cipher(settings: Settings) -> TokenCipher:
    return TokenCipher(require_token_keys(settings))


def _run(settings: Settings, work: Callable[[redis.Redis, Keys], int]) -> int:
    """Run `work(client, keys)`, turning Redis failures into one-line runtime errors."""
    client = _client(settings)
    try:
        result: int = work(client, Keys(settings.namespace))
        return result
    except RedisError as exc:
        raise CommandError(f"Redis failed: {type(exc).__name__}") from None
    finally:
        client.close()


def _require(client: redis.Redis, keys: Keys, member_id: str) -> Portal:
    portal = store.run(client, store.load_portal(keys, member_id))
    if portal is None:
        raise CommandError(f"unknown portal {member_id}")
    return portal


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    def work(client: redis.Redis, keys: Keys) -> int:
        rows: list[dict[str, object]] = []
        for member_id in store.run(client, store.list_members(keys)):
            portal, tokens = store.run(
                client, store.load_portal(keys, member_id) + store.load_tokens(keys, member_id)
            )
            if portal is None:
                continue
            facts = stored_facts(client, keys, settings, portal, member_id, failed=False)
            rows.append(_summary(portal, tokens) | {"health": column(problems(facts))})
        for key in client.scan_iter(match=keys.pending_install("*", "*"), count=1000):
            raw = client.hgetall(key)
            if raw:
                pending = store.PendingInstall.from_hash(raw)
                rows.append(
                    {
                        "member_id": pending.portal.member_id,
                        "domain": pending.portal.domain,
                        "status": "pending-install",
                        "health": "install_pending",
                    }
                )
        if args.json:
            print(orjson.dumps(rows).decode())
            return 0
        print(f"{'MEMBER_ID':34} {'DOMAIN':32} {'STATUS':16} {'TOKENS':16} HEALTH")
        for row in rows:
            why = f"  ({row['reason']})" if row["status"] not in ("active", "pending-install") else ""
            print(
                f"{row['member_id']!s:34} {row['domain']!s:32} {row['status']!s:16} "
                f"{row.get('tokens', '')!s:16} {row['health']}{why}"
            )
        return 0

    return _run(settings, work)


def _summary(portal: Portal, tokens: dict[str, AcceptedToken]) -> dict[str, object]:
    now = time.time()
    kinds: dict[str, int] = {}
    for token in tokens.values():
        if token.valid_at(now):
            kinds[token.kind] = kinds.get(token.kind, 0) + 1
    return {
        "member_id": portal.member_id,
        "domain": portal.domain,
        "status": str(portal.status),
        "tokens": ",".join(f"{kind}:{count}" for kind, count in sorted(kinds.items())) or "-",
        "oauth": bool(portal.access_token),
        "webhook": bool(portal.webhook_url),
        "reason": portal.reason,
    }


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    member_id = member_id_arg(args.member_id)

    def work(client: redis.Redis, keys: Keys) -> int:
        portal, tokens = store.run(
            client, store.load_portal(keys, member_id) + store.load_tokens(keys, member_id)
        )
        pendings = store.load_pendings(client, keys, member_id)
        if portal is None and not pendings:
            raise CommandError(f"unknown portal {member_id}")
        shown: dict[str, object] = portal.public() if portal else {"member_id": member_id}
        shown["accepted_tokens"] = [_token_row(d, t) for d, t in sorted(tokens.items())]
        if portal is not None and settings.token_keys:
            cipher = _cipher(settings)
            shown["key_ids"] = sorted(
                {
                    cipher.key_of(v)
                    for v in (portal.access_token, portal.refresh_token, portal.webhook_url)
                    if v
                }
            )
        facts = stored_facts(client, keys, settings, portal, member_id, failed=True)
        shown["health"] = health_block(facts, problems(facts), time.time())
        if facts.offline is not None:
            shown["offline"] = dict(facts.offline)
        if pendings:
            # the oldest; `pending_installs` counts them all (a forged one cannot hide it)
            pending = min(pendings, key=lambda one: one.first_seen)
            shown["pending_install"] = {
                "domain": pending.portal.domain,
                "first_seen": pending.first_seen,
                "attempts": pending.attempts,
                "update": pending.version is not None,
            }
            shown["pending_installs"] = len(pendings)
        print(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
        return 0

    return _run(settings, work)


def run_add(args: argparse.Namespace, settings: Settings) -> int:
    member_id = member_id_arg(args.member_id)
    domain = domain_arg(args.domain)
    endpoint = endpoint_arg(
        args.client_endpoint or f"https://{domain}/rest/", domain, settings, "--client-endpoint"
    ).rstrip("/")
    connector = None if args.auth_connector is None else connector_arg(args.auth_connector)
    user_id = None if args.user_id is None else user_id_arg(args.user_id)
    secrets = parse_secrets(_read_secrets(args.secrets_file))
    if secrets.get("webhook_url"):
        endpoint_arg(secrets["webhook_url"], domain, settings, "secrets: webhook_url")
    cipher = _cipher(settings)

    def work(client: redis.Redis, keys: Keys) -> int:
        existing = store.run(client, store.load_portal(keys, member_id))
        portal = replace(
            existing or Portal(member_id=member_id, domain=domain),
            domain=domain,
            client_endpoint=endpoint + "/",
            status=Status.ACTIVE,
            reason="added by hand (b24pipe portals add)",
            updated_at=int(time.time()),
        )
        # options left out keep what the record had (or the new record's defaults)
        if args.plan:
            portal.plan = args.plan
        if connector is not None:
            portal.auth_connector = connector
        if user_id is not None:
            portal.user_id = user_id
        if secrets.get("access_token"):
            portal.seal_tokens(
                cipher, secrets["access_token"], secrets.get("refresh_token", ""), secrets.get("expires", 0)
            )
        if secrets.get("webhook_url"):
            portal.webhook_url = cipher.encrypt(secrets["webhook_url"], portal.context("webhook_url"))
            portal.user_id = webhook_user(secrets["webhook_url"])
        writes = store.chain(
            store.save_portal(keys, portal),
            *(
                store.add_token(keys, member_id, digest(w), AcceptedToken("webhook"))
                for w in secrets["webhook_token"]
            ),
        )
        if secrets.get("application_token"):
            token_digest = digest(secrets["application_token"])
            _, changed = store.run(client, writes + store.set_app_token(keys, member_id, token_digest, 0))
            if changed:
                security_event(
                    "token_changed",
                    member_id=member_id,
                    application_token=mask(secrets["application_token"]),
                    source="portals add",
                )
        else:
            store.run(client, writes)
        for webhook in secrets["webhook_token"]:
            security_event(
                "token_changed", member_id=member_id, webhook_token=mask(webhook), source="portals add"
            )
        if secrets.get("access_token"):
            # a token arrival like an install: the worker reconciles the portal's bindings
            from workers.portals.binding import schedule

            schedule(client, keys, member_id, "portals add")
        print(f"portal {member_id} ({domain}) {'updated' if existing else 'added'}")
        return 0

    return _run(settings, work)


def run_bind(args: argparse.Namespace, settings: Settings) -> int:
    # the REST client is imported only by the command that needs it
    from workers import handlers
    from workers.errors import B24Error
    from workers.portals.binding import bind_portal

    member_id = member_id_arg(args.member_id)
    if settings.public_url is None:
        raise ConfigurationError("portals bind: B24PIPE_PUBLIC_URL is not set (the URL events are bound to)")
    try:
        handlers.load_modules(settings.handlers)
    except handlers.HandlerImportError as exc:
        raise ConfigurationError(str(exc)) from None
    try:
        plan = bind_portal(settings, member_id, handlers.registered_events())
    except (B24Error, ConfigurationError) as exc:
        raise CommandError(f"portals bind {member_id}: {scrub(str(exc))}") from None
    report = plan.report() if plan else {}
    print(orjson.dumps(report).decode())
    return 0


def run_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from b24pipe.commands.doctor import diagnose, report
    from workers import handlers

    member_id = member_id_arg(args.member_id)
    try:
        handlers.load_modules(settings.handlers)  # the bindings wanted are the handlers' events
    except handlers.HandlerImportError as exc:
        raise ConfigurationError(str(exc)) from None

    def work(client: redis.Redis, keys: Keys) -> int:
        portal = store.run(client, store.load_portal(keys, member_id))
        pendings = store.load_pendings(client, keys, member_id)
        if portal is None and not pendings:
            raise CommandError(f"unknown portal {member_id}")
        facts = diagnose(client, keys, settings, portal, member_id)
        found, now = problems(facts), time.time()
        domain = portal.domain if portal else pendings[0].portal.domain
        if args.json:
            shown = {"member_id": member_id, "domain": domain, "health": health_block(facts, found, now)}
            print(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
        else:
            print("\n".join(report(domain, facts, found, now)))
        return 1 if found else 0

    return _run(settings, work)


def run_revoke(args: argparse.Namespace, settings: Settings) -> int:
    member_id = member_id_arg(args.member_id)

    def work(client: redis.Redis, keys: Keys) -> int:
        _require(client, keys, member_id)
        store.run(client, store.revoke(keys, member_id, "revoked by hand (b24pipe portals revoke)"))
        security_event("revoked", member_id=member_id, reason="portals revoke")
        print(f"portal {member_id} revoked")
        return 0

    return _run(settings, work)


def run_pause(args: argparse.Namespace, settings: Settings) -> int:
    member_id = member_id_arg(args.member_id)

    def work(client: redis.Redis, keys: Keys) -> int:
        _require(client, keys, member_id)
        fresh = pausing.pause(client, keys, member_id)
        print(f"portal {member_id} paused" if fresh else f"portal {member_id} was already paused")
        return 0

    return _run(settings, work)


def run_resume(args: argparse.Namespace, settings: Settings) -> int:
    member_id = member_id_arg(args.member_id)

    def work(client: redis.Redis, keys: Keys) -> int:
        _require(client, keys, member_id)
        back = pausing.resume(client, keys, member_id)
        print(f"portal {member_id} resumed: {back} held job(s) back in their queue")
        return 0

    return _run(settings, work)


def run_purge(args: argparse.Namespace, settings: Settings) -> int:
    member_id = member_id_arg(args.member_id)

    def work(client: redis.Redis, keys: Keys) -> int:
        portal = store.run(client, store.load_portal(keys, member_id))
        pending = store.run(client, store.pending_digests(keys, member_id))
        if portal is None and not pending:
            raise CommandError(f"unknown portal {member_id}")
        store.run(client, store.revoke(keys, member_id, "purged"))
        store.purge_sync(client, keys, member_id)
        security_event("revoked", member_id=member_id, reason="portals purge", purged=True)
        print(f"portal {member_id} purged")
        return 0

    return _run(settings, work)


def run_rekey(args: argparse.Namespace, settings: Settings) -> int:
    cipher = _cipher(settings)

    def work(client: redis.Redis, keys: Keys) -> int:
        report = rekey(client, keys, cipher)
        if args.json:
            print(orjson.dumps(report.__dict__ | {"key": cipher.current_key}).decode())
        else:
            print(
                f"re-sealed {report.resealed} records under key {cipher.current_key}; {report.current} already were"
            )
        if report.unreadable:
            raise CommandError(
                f"{len(report.unreadable)} records are sealed with a key no longer configured "
                f"(put it back in B24PIPE_TOKEN_KEYS): {', '.join(sorted(report.unreadable))}"
            )
        if report.busy:
            raise CommandError(
                f"{len(report.busy)} records kept changing; run rekey again: {', '.join(report.busy)}"
            )
        return 0

    return _run(settings, work)
