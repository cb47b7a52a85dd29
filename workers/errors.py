"""The exceptions handlers raise and the REST client raises, and what the worker does with each.

All derive from `B24PipeError` (shared.errors draws the whole tree). A `ConfigurationError`
(shared.errors, importable from here) is never retried: an operator must fix the setting.
The REST client raises it as `RestConfigurationError`, also a `B24Error`, when b24pipe's own
settings fail the call (no OAuth client credentials, the authorization server refused by the
host policy; `code` names which).

Handler control flow:
- `Retry(after)`: run this (event, handler) again after `after` seconds; uses an attempt.
- `Permanent(reason)`: do not retry; the job goes to the failed registry.

REST client errors (all `B24Error`):
- `RateLimited(after)`, `OperatingLimit(after)`: waiting is not failure. The worker
  defers the job by `after` seconds without using up an attempt.
- `ReauthRequired`: the portal's refresh token is gone (`invalid_grant`); the worker parks
  the portal's jobs until a new token arrives.
- `AuthRevoked`: the app was uninstalled or tokens are unusable (`invalid_token`,
  `NO_AUTH_FOUND`); parked like `ReauthRequired`.
- `ScopeMissing`, `AccessDenied`, `MethodNotFound`, `BadRequest`, `PortalDeleted`: do not retry.
- `ApiError` (5xx, overloaded...): retried with backoff like any other exception.
- `WriteUncertain` (an `ApiError`): a write that is not safe to send again (see
  workers.rest.methodkind) failed after it may have reached Bitrix24: it may or may not have
  happened. The client did not resend it; the handler decides (the job follows its retry
  policy like any `ApiError` when the handler lets it through).
- `IdempotencyKeyReused` (a `BadRequest`): REST 3.0 answered 422, the `Idempotency-Key` was
  already used with another body. Never retried.

Error texts never contain tokens: the client builds them from codes and method names only.
"""

from __future__ import annotations

# re-exported: handlers catch them from here like every other error of this module
from shared.errors import B24PipeError as B24PipeError
from shared.errors import ConfigurationError as ConfigurationError


class Retry(B24PipeError):
    def __init__(self, after: float = 0.0, reason: str = "") -> None:
        super().__init__(reason or f"retry after {after:g}s")
        self.after = max(0.0, float(after))


class Permanent(B24PipeError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class B24Error(B24PipeError):
    """An error answer from Bitrix24 (or the way to it). `code` is Bitrix24's error code."""

    retryable = False

    def __init__(self, code: str, description: str = "", *, method: str = "", status: int = 0) -> None:
        text = f"{method}: {code}" if method else code
        if description:
            text = f"{text}: {description}"
        super().__init__(text)
        self.code = code
        self.description = description
        self.method = method
        self.status = status


class ApiError(B24Error):
    """5xx, overload, malformed answers: retried with backoff."""

    retryable = True


class WriteUncertain(ApiError):
    """The write may or may not have happened: its answer was lost (timeout after sending,
    dropped connection, 5xx) and it cannot be sent again safely (no idempotency key, not
    idempotent by nature). Make it safe with `b24.v3(...)` (an `Idempotency-Key` on every
    write) or look before writing again."""


class RateLimited(B24Error):
    """The shared limiter (or Bitrix24's QUERY_LIMIT_EXCEEDED) says wait `after` seconds."""

    def __init__(self, after: float, *, method: str = "") -> None:
        super().__init__("QUERY_LIMIT_EXCEEDED", f"wait {after:.2f}s", method=method, status=503)
        self.after = after


class OperatingLimit(B24Error):
    """A method's operating-time window is full until `after` seconds from now."""

    def __init__(self, after: float, *, method: str = "") -> None:
        super().__init__("OPERATION_TIME_LIMIT", f"wait {after:.2f}s", method=method, status=429)
        self.after = after


class ReauthRequired(B24Error):
    """Refresh said invalid_grant: the portal needs a new token (install page, update, `portals add`)."""


class AuthRevoked(B24Error):
    """Tokens unusable (uninstalled, invalid_token, NO_AUTH_FOUND)."""


class ScopeMissing(B24Error):
    """insufficient_scope: the app lacks a scope; a configuration error."""


class AccessDenied(B24Error):
    """ACCESS_DENIED, INVALID_CREDENTIALS, user_access_error, WRONG_AUTH_TYPE, WRONG_LICENSE."""


class MethodNotFound(B24Error):
    """ERROR_METHOD_NOT_FOUND."""


class BadRequest(B24Error):
    """ERROR_ARGUMENT, ERROR_CORE, INVALID_REQUEST and other 400s."""


class IdempotencyKeyReused(BadRequest):
    """REST 3.0 422: this `Idempotency-Key` was used (within 24 h) with another body."""


class PortalDeleted(B24Error):
    """PORTAL_DELETED: stop, the portal is gone."""


class RestConfigurationError(B24Error, ConfigurationError):
    """b24pipe's own settings, not Bitrix24, fail the call (B24_CLIENT_ID/B24_CLIENT_SECRET not
    set, B24_OAUTH_URL refused by the host policy). A `ConfigurationError`, so never retried,
    and a `B24Error`, so code that handles the client's errors handles it too. `code` names
    the problem (`NO_CLIENT_CREDENTIALS`, `OUTBOUND_REFUSED`)."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(code, message)


class OutboundBlocked(B24Error):
    """The host policy refused the destination (see shared.outbound)."""
