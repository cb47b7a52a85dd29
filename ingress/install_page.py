"""The HTML answer of `POST /b24/install`: the page Bitrix24 shows in its install frame.

The install is finished only when the page calls `BX24.installFinish()` (until then
Bitrix24 delivers no events), so the page does exactly that once the install is stored,
and nothing else. It echoes nothing from the request (no injection surface) and is never
cached. A refused install gets a page that does not call `installFinish()`.
"""

from __future__ import annotations

from aiohttp import web

BX24_SCRIPT = "//api.bitrix24.com/api/v1/"

_FINISH = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Installation</title>
<script src="{BX24_SCRIPT}"></script>
</head>
<body>
<p>Installation complete.</p>
<script>BX24.init(function () {{ BX24.installFinish(); }});</script>
</body>
</html>
"""

_FAILED = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Installation</title></head>
<body><p>{message}</p></body>
</html>
"""

MALFORMED = "The installation request is malformed."
UNVERIFIED = "The installation could not be verified."
TRY_AGAIN = "The installation could not be stored; please try again."

_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def finished() -> web.Response:
    """The install is stored (verified, or pending verification): finish it."""
    return web.Response(status=200, text=_FINISH, content_type="text/html", headers=_HEADERS)


def refused(status: int, message: str) -> web.Response:
    """The install was not stored. `message` is one of this package's fixed texts."""
    return web.Response(
        status=status, text=_FAILED.format(message=message), content_type="text/html", headers=_HEADERS
    )
