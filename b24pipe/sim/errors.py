"""Errors the simulated portal answers with, carrying Bitrix24's real codes and statuses."""

from __future__ import annotations


class RestError(Exception):
    """`{"error": code, "error_description": description}` with an HTTP status."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(f"{status} {code}")
        self.status = status
        self.code = code
        self.description = description

    def body(self) -> dict[str, str]:
        return {"error": self.code, "error_description": self.description}


def expired_token() -> RestError:
    return RestError(401, "expired_token", "The access token provided has expired.")


def invalid_token() -> RestError:
    return RestError(401, "invalid_token", "The access token provided is invalid.")


def no_auth() -> RestError:
    return RestError(401, "NO_AUTH_FOUND", "Wrong authorization data")


def query_limit() -> RestError:
    return RestError(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")


def operation_time_limit() -> RestError:
    return RestError(429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.")


def insufficient_scope() -> RestError:
    return RestError(
        403, "insufficient_scope", "The request requires higher privileges than provided by the access token"
    )


def method_not_found() -> RestError:
    return RestError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")


def access_denied(description: str = "Access denied!") -> RestError:
    return RestError(403, "ACCESS_DENIED", description)


def argument(description: str) -> RestError:
    return RestError(400, "ERROR_ARGUMENT", description)


def not_found() -> RestError:
    # Bitrix24 really answers crm.*.get of a missing id with an empty error code.
    return RestError(400, "", "Not found")
