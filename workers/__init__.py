"""The RQ side of b24pipe. Applications import what handlers need from here:

from workers import handler, Retry, Permanent
"""

from workers.errors import (
    AccessDenied,
    ApiError,
    AuthRevoked,
    B24Error,
    BadRequest,
    IdempotencyKeyReused,
    MethodNotFound,
    OperatingLimit,
    OutboundBlocked,
    Permanent,
    PortalDeleted,
    RateLimited,
    ReauthRequired,
    Retry,
    ScopeMissing,
    WriteUncertain,
)
from workers.handlers import handler

__all__ = [
    "AccessDenied",
    "ApiError",
    "AuthRevoked",
    "B24Error",
    "BadRequest",
    "IdempotencyKeyReused",
    "MethodNotFound",
    "OperatingLimit",
    "OutboundBlocked",
    "Permanent",
    "PortalDeleted",
    "RateLimited",
    "ReauthRequired",
    "Retry",
    "ScopeMissing",
    "WriteUncertain",
    "handler",
]
