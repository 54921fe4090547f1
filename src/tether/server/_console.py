"""The web console: server-rendered page shells and one small script, no build step.

Each page is the same shell (navigation, a live region for errors, a ``<main>`` naming the
view); ``static/console.js`` fills it from the same JSON API and event streams other clients
use, so the console can show nothing the caller's key could not read. Signing in stores the
API key in an HttpOnly, SameSite=Strict cookie; changes also need a header only this
origin's script sets (see ``_auth.Gate.caller``).
"""

from __future__ import annotations

import html
import urllib.parse
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from tether.errors import Unauthenticated
from tether.server._auth import COOKIE, Caller
from tether.server._state import state_of

STATIC = Path(__file__).parent / "static"

_NAV = (("runs", "/console", "Runs"), ("approvals", "/console/approvals", "Approvals"),
        ("audit", "/console/audit", "Audit"), ("spend", "/console/spend", "Spend"))


def _page(title: str, view: str, body: str, caller: Caller | None, **data: str) -> HTMLResponse:
    nav = "".join(
        f'<a href="{href}"' + (' aria-current="page"' if name == view else "") + f">{label}</a>"
        for name, href, label in _NAV)
    who = ""
    if caller is not None:
        who = (f'<span class="who">{html.escape(caller.principal)} · '
               f'{html.escape(caller.tenant)}</span>'
               '<form method="post" action="/console/logout"><button>Sign out</button></form>')
    attrs = "".join(f' data-{k.replace("_", "-")}="{html.escape(v)}"' for k, v in data.items())
    return HTMLResponse(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · Tether</title>
<link rel="stylesheet" href="/console/static/console.css">
<script src="/console/static/console.js" defer></script></head>
<body><a class="skip" href="#main">Skip to content</a>
<header><strong>Tether</strong><nav aria-label="Console">{nav}</nav>{who}</header>
<div id="problem" role="alert" hidden></div>
<main id="main" tabindex="-1" data-view="{view}"{attrs}>{body}</main>
</body></html>""", headers={"Content-Security-Policy": "default-src 'self'; "
                                                       "frame-ancestors 'none'"})


def _signed_in(request: Request) -> Caller | Response:
    try:
        return state_of(request).gate.caller(request)
    except Unauthenticated:
        return RedirectResponse("/console/login", status_code=303)


async def runs_page(request: Request) -> Response:
    caller = _signed_in(request)
    if isinstance(caller, Response):
        return caller
    return _page("Runs", "runs", "<h1>Runs</h1>", caller)


async def run_page(request: Request) -> Response:
    caller = _signed_in(request)
    if isinstance(caller, Response):
        return caller
    run_id = request.path_params["run_id"]
    return _page(f"Run {run_id}", "run", f"<h1>Run <code>{html.escape(run_id)}</code></h1>",
                 caller, run_id=run_id)


def _simple(view: str, title: str):  # type: ignore[no-untyped-def]
    async def page(request: Request) -> Response:
        caller = _signed_in(request)
        if isinstance(caller, Response):
            return caller
        return _page(title, view, f"<h1>{title}</h1>", caller)
    return page


_LOGIN = """<h1>Sign in</h1>
<form method="post" action="/console/login" class="login">
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="off" required autofocus
 placeholder="tk_..." aria-describedby="key-help">
<p id="key-help">The key stays in an HttpOnly cookie of this site. Issue one with
<code>APIKeys.issue</code> or ask your administrator.</p>
{problem}<button type="submit">Sign in</button></form>"""


async def login_page(request: Request) -> Response:
    return _page("Sign in", "login", _LOGIN.format(problem=""), None)


async def login(request: Request) -> Response:
    form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0].strip()
    if state_of(request).gate.identify(key) is None:
        problem = '<p class="error" role="alert">That key is unknown, revoked or malformed.</p>'
        refused = _page("Sign in", "login", _LOGIN.format(problem=problem), None)
        refused.status_code = 401
        return refused
    response = RedirectResponse("/console", status_code=303)
    response.set_cookie(COOKIE, key, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


async def root(request: Request) -> Response:
    return RedirectResponse("/console", status_code=307)


def console_routes() -> list[BaseRoute]:
    return [
        Route("/", root, methods=["GET"]),
        Route("/console", runs_page, methods=["GET"]),
        Route("/console/runs/{run_id}", run_page, methods=["GET"]),
        Route("/console/approvals", _simple("approvals", "Approvals"), methods=["GET"]),
        Route("/console/audit", _simple("audit", "Audit trail"), methods=["GET"]),
        Route("/console/spend", _simple("spend", "Spend"), methods=["GET"]),
        Route("/console/login", login_page, methods=["GET"]),
        Route("/console/login", login, methods=["POST"]),
        Route("/console/logout", logout, methods=["POST"]),
        Mount("/console/static", StaticFiles(directory=STATIC), name="static"),
    ]
