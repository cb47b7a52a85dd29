"""`SimClient`: the simulator's control API as typed Python calls (synchronous, stdlib only).

From async code, wrap calls in `asyncio.to_thread(...)`; control calls are quick.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

from b24pipe.sim.phpform import http_build_query


class SimError(Exception):
    """The control API refused a call (status and its JSON answer attached)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"simulator answered {status}: {body}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class SimPortal:
    member_id: str
    domain: str
    client_endpoint: str
    server_endpoint: str
    raw: dict[str, Any]


@dataclass(frozen=True)
class Installation:
    member_id: str
    domain: str
    access_token: str
    refresh_token: str
    application_token: str
    expires: int
    user_id: int
    version: int
    client_endpoint: str
    server_endpoint: str
    deliveries: list[dict[str, Any]]
    frame_url: str = ""  # install(frame=True): the page a browser loads to run the install page

    @classmethod
    def from_answer(cls, raw: dict[str, Any]) -> Installation:
        names = cls.__dataclass_fields__
        return cls(
            **{name: raw[name] for name in names if name not in ("deliveries", "frame_url")},
            deliveries=raw.get("deliveries", []),
            frame_url=raw.get("frame_url", ""),
        )


@dataclass(frozen=True)
class RestAnswer:
    status: int
    body: Any
    headers: dict[str, str]


class SimClient:
    def __init__(self, base_url: str, client_id: str, client_secret: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.oauth_url = self.base_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.timeout = timeout

    # -- plumbing --------------------------------------------------------------------------
    def request(self, verb: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.base_url}{path}", data=data, method=verb, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                parsed: Any = json.loads(raw)
            except ValueError:
                parsed = raw.decode("utf-8", "replace")
            raise SimError(exc.code, parsed) from None

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, {k: v for k, v in body.items() if v is not None})

    # -- portals and the app's lifecycle ------------------------------------------------------
    def create_portal(
        self, member_id: str | None = None, domain: str | None = None, plan: str = "standard", **options: Any
    ) -> SimPortal:
        """options: drain, burst, users=[{id, admin, name}], scope=[...], token_ttl, status,
        offline_extended, operating_limit, costs={method: seconds}."""
        member_id = member_id or uuid.uuid4().hex
        raw = self._post("/_sim/portals", {"member_id": member_id, "domain": domain, "plan": plan, **options})
        return SimPortal(raw["member_id"], raw["domain"], raw["client_endpoint"], raw["server_endpoint"], raw)

    def install(
        self,
        member_id: str,
        handler_url: str | None = None,
        install_url: str | None = None,
        user_id: int | None = None,
        version: int = 1,
        bind_events: list[str] | None = None,
        lifecycle_to_handler: bool = True,
        finished: bool | None = None,
        frame: bool = False,
    ) -> Installation:
        return Installation.from_answer(
            self._post(
                f"/_sim/portals/{member_id}/install",
                {
                    "handler_url": handler_url,
                    "install_url": install_url,
                    "user_id": user_id,
                    "version": version,
                    "bind_events": bind_events,
                    "lifecycle_to_handler": lifecycle_to_handler,
                    "finished": finished,
                    "frame": frame,
                },
            )
        )

    def update_app(
        self, member_id: str, version: int | None = None, send_event: bool = False
    ) -> Installation:
        """A new version: every binding gone; ONAPPUPDATE only with `send_event`."""
        return Installation.from_answer(
            self._post(f"/_sim/portals/{member_id}/update", {"version": version, "send_event": send_event})
        )

    def finish_install(self, member_id: str) -> dict[str, Any]:
        """What the install page's `BX24.installFinish()` tells the portal."""
        result: dict[str, Any] = self._post(f"/_sim/portals/{member_id}/install-finish", {})
        return result

    def expire_payment(self, member_id: str, expired: bool = True) -> dict[str, Any]:
        result: dict[str, Any] = self._post(f"/_sim/portals/{member_id}/payment", {"expired": expired})
        return result

    def uninstall(self, member_id: str, clean: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self._post(f"/_sim/portals/{member_id}/uninstall", {"clean": clean})
        return result

    def user_tokens(self, member_id: str, user_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._post(f"/_sim/portals/{member_id}/tokens", {"user_id": user_id})
        return result

    def auth_code(self, member_id: str, user_id: int | None = None) -> str:
        return str(self._post(f"/_sim/portals/{member_id}/code", {"user_id": user_id})["code"])

    def add_webhook(self, member_id: str, user_id: int = 1) -> str:
        """An inbound-webhook base URL (`.../rest/<user>/<secret>/`) acting as `user_id`."""
        return str(self._post(f"/_sim/portals/{member_id}/webhooks", {"user_id": user_id})["url"])

    def expire_tokens(self, member_id: str) -> int:
        return int(self._post(f"/_sim/portals/{member_id}/expire", {})["expired"])

    # -- time, limits, faults ------------------------------------------------------------------
    def advance_clock(self, member_id: str, seconds: float, freeze: bool | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._post(
            f"/_sim/portals/{member_id}/clock", {"advance": seconds, "freeze": freeze}
        )
        return result

    def freeze_clock(self, member_id: str, frozen: bool = True) -> dict[str, Any]:
        return self.advance_clock(member_id, 0, freeze=frozen)

    def faults(self, member_id: str, **switches: Any) -> dict[str, Any]:
        """See b24pipe/sim/faults.py; also foreign_rate (req/s) and foreign_burst (requests)."""
        result: dict[str, Any] = self._post(f"/_sim/portals/{member_id}/faults", switches)
        return result

    def limits(self, member_id: str, **values: Any) -> dict[str, Any]:
        """drain, burst, operating_limit, costs={method: seconds}."""
        result: dict[str, Any] = self._post(f"/_sim/portals/{member_id}/limits", values)
        return result

    def change_domain(self, member_id: str, domain: str) -> SimPortal:
        raw = self._post(f"/_sim/portals/{member_id}/domain", {"domain": domain})
        return SimPortal(raw["member_id"], raw["domain"], raw["client_endpoint"], raw["server_endpoint"], raw)

    # -- the world changing, and what the simulator saw -------------------------------------------
    def change_entity(
        self,
        member_id: str,
        entity: str = "deal",
        action: str = "update",
        id: int | None = None,
        fields: dict[str, Any] | None = None,
        user_id: int | None = None,
        robot: bool = False,
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._post(
            f"/_sim/portals/{member_id}/change",
            {
                "entity": entity,
                "action": action,
                "id": id,
                "fields": fields,
                "user_id": user_id,
                "robot": robot,
            },
        )
        return result

    def apply_changes(
        self,
        member_id: str,
        changes: list[dict[str, Any]],
        entity: str = "deal",
        user_id: int | None = None,
        robot: bool = False,
        concurrency: int = 16,
    ) -> dict[str, Any]:
        """Apply `changes` ([{action, id, fields}], in order) as one person, then deliver their
        events to the bound handlers with `concurrency` POSTs in flight; answers `applied`,
        `ids`, `deliveries`, `statuses` ({"200": n, ...}) and `seconds`, once all are delivered."""
        result: dict[str, Any] = self._post(
            f"/_sim/portals/{member_id}/changes",
            {
                "changes": changes,
                "entity": entity,
                "user_id": user_id,
                "robot": robot,
                "concurrency": concurrency,
            },
        )
        return result

    def wait_events(self, member_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._post(f"/_sim/portals/{member_id}/events/wait", {})
        return result

    def deliveries(self, member_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"/_sim/portals/{member_id}/deliveries")
        return result

    def stats(self, member_id: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "GET", f"/_sim/portals/{member_id}" if member_id else "/_sim/stats"
        )
        return result

    def sink_url(self, name: str) -> str:
        return f"{self.base_url}/_sim/sink/{name}"

    def sink(self, name: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"/_sim/sink/{name}")
        return result

    def configure_sink(self, name: str, status: int = 200, delay: float = 0.0) -> None:
        self._post(f"/_sim/sink/{name}/config", {"status": status, "delay": delay})

    # -- talking to the simulated Bitrix24 as an app would ------------------------------------------
    def call(
        self, url: str, params: dict[str, Any] | None = None, *, token: str | None = None, form: bool = False
    ) -> RestAnswer:
        """POST to a portal method or OAuth URL; `token` goes in a Bearer header. Never raises on status."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if form:
            data = http_build_query(params or {}).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            data = json.dumps(params or {}).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method="POST", headers=headers)
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=self.timeout) as response:
                status, raw, hdrs = response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            status, raw, hdrs = exc.code, exc.read(), dict(exc.headers)
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        return RestAnswer(status, body, hdrs)

    def rest(
        self,
        portal: SimPortal | str,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        form: bool = False,
    ) -> RestAnswer:
        endpoint = portal if isinstance(portal, str) else portal.client_endpoint
        return self.call(f"{endpoint}{method}.json", params, token=token, form=form)

    def refresh(self, refresh_token: str) -> RestAnswer:
        return self.call(
            f"{self.oauth_url}/oauth/token/",
            {
                "grant_type": "refresh_token",
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "refresh_token": refresh_token,
            },
            form=True,
        )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Show a portal's 302 to the caller instead of following it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
