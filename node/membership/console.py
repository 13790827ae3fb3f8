"""The operator's membership page: members, pending proposals with expiry, approve, reject, propose.

Served as two public, read-only resources (``GET /console/membership`` and its script); every
change it makes goes through the ``/membership`` routes with the session cookie and the
``X-CSRF-Token`` header from ``GET /session`` (the sign-in contract), so the sign-in wrapper
checks the operator role and the fresh second factor as for any other caller.  Names, countries
and URLs come from join requests, i.e. from outsiders: the script only ever writes them with
``textContent``, and the strict Content-Security-Policy forbids inline script besides.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from ..api.openapi import operation
from ..people.roles import public

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)

PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Membership</title>
<style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em .8em;text-align:left}
.err{color:#a00}</style></head>
<body>
<h1>Consortium membership</h1>
<p id="who">Sign in as an operator (with a fresh second factor) to vote.</p>
<h2>Members</h2>
<table><thead><tr><th>name</th><th>role</th><th>power</th><th>country</th><th>data plane</th></tr></thead>
<tbody id="members"></tbody></table>
<h2>Proposals</h2>
<table><thead><tr><th>id</th><th>state</th><th>change</th><th>approved</th><th>expires</th><th></th></tr>
</thead><tbody id="proposals"></tbody></table>
<h2>Sponsor a newcomer</h2>
<p><textarea id="request" rows="4" cols="80" placeholder="the newcomer's join-request.hex"></textarea></p>
<p><button id="propose">Propose</button> <span id="message"></span></p>
<script src="/console/membership.js"></script>
</body></html>
"""

SCRIPT: Final = """"use strict";
let csrf = "";
function cell(row, text) {
  const td = document.createElement("td"); td.textContent = text; row.appendChild(td); return td;
}
function say(text, bad) {
  const m = document.getElementById("message"); m.textContent = text; m.className = bad ? "err" : "";
}
async function call(method, path, body) {
  const headers = {"Content-Type": "application/json"};
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  const answer = await fetch(path, {method, headers, credentials: "same-origin",
                                    body: body === undefined ? undefined : JSON.stringify(body)});
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(data.error || ("HTTP " + answer.status));
  return data;
}
async function vote(id, verdict) {
  try {
    await call("POST", "/membership/proposals/" + encodeURIComponent(id) + "/votes", {vote: verdict});
    say(verdict + " recorded");
  } catch (e) { say(e.message, true); }
  refresh();
}
async function refresh() {
  const data = await call("GET", "/membership");
  const members = document.getElementById("members"); members.replaceChildren();
  for (const m of data.members) {
    const row = document.createElement("tr");
    for (const v of [m.name, m.role, String(m.power), m.country, m.data_url]) cell(row, v);
    members.appendChild(row);
  }
  const proposals = document.getElementById("proposals"); proposals.replaceChildren();
  for (const p of data.proposals) {
    const row = document.createElement("tr");
    cell(row, p.id.slice(0, 12)); cell(row, p.state);
    cell(row, p.action ? (p.action + " " + p.role + " " + p.name) : "");
    cell(row, p.total_power ? (p.approved_power + "/" + p.total_power) : "");
    cell(row, p.expires_ms ? new Date(p.expires_ms).toISOString() : "at height " + p.height);
    const actions = cell(row, "");
    if (p.state === "pending") {
      for (const verdict of ["approve", "reject"]) {
        const b = document.createElement("button"); b.textContent = verdict;
        b.addEventListener("click", () => vote(p.id, verdict)); actions.appendChild(b);
      }
    }
    proposals.appendChild(row);
  }
}
document.getElementById("propose").addEventListener("click", async () => {
  try {
    const request = document.getElementById("request").value.trim();
    const answer = await call("POST", "/membership/proposals", {request});
    say("proposed: " + answer.proposal_id);
  } catch (e) { say(e.message, true); }
  refresh();
});
(async () => {
  try { const s = await call("GET", "/session"); csrf = s.csrf_token || "";
        document.getElementById("who").textContent = "Signed in as " + s.name; } catch (e) { /* read-only */ }
  refresh().catch((e) => say(e.message, true));
})();
"""


class MembershipConsole:
    """The page and its script."""

    def add_routes(self, router: web.UrlDispatcher, authenticated: object) -> None:
        """Register the two public resources (the wrapper is not needed: they change nothing)."""
        wrap = authenticated if callable(authenticated) else (lambda h: h)
        router.add_get("/console/membership", wrap(self.page))
        router.add_get("/console/membership.js", wrap(self.script))

    def openapi_paths(self) -> dict[str, Any]:
        """The OpenAPI paths of the page and its script."""
        return {
            "/console/membership": {
                "get": operation("The membership page", signed_in=False, content_type="text/html")
            },
            "/console/membership.js": {
                "get": operation(
                    "The membership page's script", signed_in=False, content_type="text/javascript"
                )
            },
        }

    @public()
    async def page(self, request: web.Request) -> web.Response:
        """The HTML page."""
        return web.Response(text=PAGE, content_type="text/html", headers=_headers())

    @public()
    async def script(self, request: web.Request) -> web.Response:
        """Its script (a separate resource, so no inline script is allowed)."""
        return web.Response(text=SCRIPT, content_type="text/javascript", headers=_headers())


def _headers() -> dict[str, str]:
    return {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
