"""The portal's side of an app's install page, for a real browser.

Bitrix24 opens the install URL in a frame, POSTing the install form into it; the page loads
the BX24 library from `//api.bitrix24.com/api/v1/` and calls `BX24.installFinish()`, which
tells the portal (the parent window) that the install is finished. Here the simulator
serves the parent page (`GET /_sim/portals/{member_id}/frame`: the form, auto-submitted
into a frame) and a BX24 stub (`GET /api/v1/`: point the browser's resolver for
api.bitrix24.com at the simulator) whose `installFinish()` posts a message to the parent;
the parent reports it to `POST /_sim/portals/{member_id}/install-finish`, which finishes the
install and counts the call.
"""

from __future__ import annotations

from html import escape
from urllib.parse import unquote_plus

from aiohttp import web

from b24pipe.sim.events import Outgoing
from b24pipe.sim.phpform import http_build_query

BX24_STUB = """(function () {
  window.BX24 = {
    init: function (callback) {
      if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", function () { callback(); });
      } else {
        callback();
      }
    },
    installFinish: function () {
      window.parent.postMessage({b24sim: "installFinish"}, "*");
    }
  };
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Bitrix24 (simulated): install</title></head>
<body data-finished="0" data-loaded="0">
<form id="install" method="post" action="{action}" target="app">
{fields}
</form>
<iframe name="app" id="app" width="800" height="400" onload="loaded()"></iframe>
<script>
var submitted = false;
function loaded() {{
  if (submitted) {{
    document.body.setAttribute("data-loaded", String(Number(document.body.dataset.loaded) + 1));
  }}
}}
window.addEventListener("message", function (event) {{
  if (event.data && event.data.b24sim === "installFinish") {{
    fetch("{finish}", {{method: "POST"}}).then(function () {{
      document.body.setAttribute("data-finished", String(Number(document.body.dataset.finished) + 1));
    }});
  }}
}});
submitted = true;
document.getElementById("install").submit();
</script>
</body>
</html>
"""


def page(member_id: str, install: Outgoing) -> str:
    """The parent page: the install form POSTed into the app's frame once loaded."""
    pairs = [part.split("=", 1) for part in http_build_query(install.form).split("&") if part]
    fields = "\n".join(
        f'<input type="hidden" name="{escape(unquote_plus(k))}" value="{escape(unquote_plus(v))}">'
        for k, v in pairs
    )
    action = f"{install.url}{'&' if '?' in install.url else '?'}{install.query}"
    return _PAGE.format(
        action=escape(action), fields=fields, finish=f"/_sim/portals/{member_id}/install-finish"
    )


def stub() -> web.Response:
    return web.Response(text=BX24_STUB, content_type="application/javascript")
