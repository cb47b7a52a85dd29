"""The root of every error b24pipe raises on purpose, and the configuration branch.

Each error is defined beside the code that raises it (the module named on its line) and
derives from one root, so `except B24PipeError` separates "b24pipe refused or failed" from
a bug. The root lives here, not in workers/, because the ingress raises errors too and
neither shared/ nor ingress/ imports workers/. The tree (tests/shared/test_errors.py holds
it to the code: every class is drawn, under its real base):

    B24PipeError                  shared.errors: the root
    ├── ConfigurationError        shared.errors: a setting or the deployment is wrong; the worker never retries it
    │   ├── PlanError             shared.rateplan: a rate plan text that does not parse (also a ValueError)
    │   ├── HandlerImportError    workers.handlers: a module named in B24PIPE_HANDLERS does not import
    │   └── RestConfigurationError  workers.errors: our settings fail a REST call (also a B24Error)
    ├── DecryptError              shared.crypto: a ciphertext no configured key opens
    ├── OutboundRefused           shared.outbound: the host policy refuses a destination
    ├── FormError                 ingress.formparse: a body that cannot be decoded (also a ValueError)
    ├── Refusal                   ingress.edge: a body not read, answered with a status
    ├── ClientGone                ingress.edge: the client left before its body was complete
    ├── Unavailable               ingress.enqueuer: the event could not be stored
    ├── _NotConfirmed             ingress.enqueuer: written, not confirmed in time (becomes Unavailable)
    ├── QueryError                workers.rest.query: a batch command that cannot be read (also a ValueError)
    ├── Retry                     workers.errors: a handler asks to run again after a delay
    ├── Permanent                 workers.errors: a handler gives up; not retried
    │   └── LoopCut               workers.guards.loop: the loop breaker cut the event
    └── B24Error                  workers.errors: Bitrix24 (or the way to it) answered with an error
        ├── ApiError              workers.errors: 5xx, overload, lost answers; retried with backoff
        │   └── WriteUncertain    workers.errors: a write whose answer was lost and that is not resent
        ├── RateLimited           workers.errors: wait for the shared limiter; deferred
        ├── OperatingLimit        workers.errors: wait for the method's operating window; deferred
        ├── ReauthRequired        workers.errors: the refresh token is gone; the portal is parked
        ├── AuthRevoked           workers.errors: tokens unusable (uninstalled); parked
        ├── ScopeMissing          workers.errors: the app lacks a scope
        ├── AccessDenied          workers.errors: the user or licence may not do this
        ├── MethodNotFound        workers.errors: no such method
        ├── BadRequest            workers.errors: the request is wrong (400s)
        │   └── IdempotencyKeyReused  workers.errors: REST 3.0 422, a key reused with another body
        ├── PortalDeleted         workers.errors: the portal is gone
        └── OutboundBlocked       workers.errors: the host policy refused where the call would go

Outside on purpose:

    JobOutcome                    workers.runner.outcome: not an error but how `run_event` tells the worker what to do with a job (its subclasses too)

And outside the product packages, the errors of b24pipe/: the CLI's `UsageError` and
`CommandError` (b24pipe.errors), its embedded Redis's `ServerError` and the example run's
`ExampleFailure` only choose an exit status and a message; the simulator's errors
(b24pipe.sim, `SimulatorError` of its launcher) stand for Bitrix24's side of the wire. None
is raised to code that embeds b24pipe or to a handler.

`ScopeMissing` is a configuration problem too (the app's scopes are set in Bitrix24), but it
is an answer from Bitrix24 and stays a `B24Error`; like every non-retryable `B24Error` the
worker does not retry it.
"""

from __future__ import annotations


class B24PipeError(Exception):
    """The root of b24pipe's errors (the tree is in this module's docstring)."""


class ConfigurationError(B24PipeError):
    """A setting is missing or invalid, or the deployment cannot work as configured. Its text is
    one line naming the problem. Retrying cannot help, so the worker fails the job at once.

    `code`: a fixed name for the problem where the raiser has one (the token path's
    `NO_CLIENT_CREDENTIALS`), as `B24Error.code` names Bitrix24's; it leads the text."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.code = code
