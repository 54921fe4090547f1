"""``--server URL``: the read and control commands through a ``tether serve`` instead of the
store, printing the same lines and exiting with the same codes.

The API key comes from an environment variable (``TETHER_API_KEY``, or the one
``--api-key-env NAME`` names), never from a flag: a key on the command line would sit in
every process listing and shell history. The key decides who acts, its principal and
tenant, so ``--tenant`` and ``--principal`` are refused with ``--server`` rather than
silently ignored; the server's policies decide the rest, as they do for local commands.

The wire carries runs, journal records and approvals as JSON; they are turned back into the
store's own types here so one set of formatting code serves both paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import httpx

from tether.cli._common import fail, parse_json
from tether.client import Client
from tether.errors import TetherError, Unauthenticated
from tether.governance import AuditReport, Problem, Unanchored
from tether.store import Approval, Record
from tether.types import JSON, JSONObject, Run, RunStatus

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_KEY_ENV = "TETHER_API_KEY"


def server_options(fn: F) -> F:
    """``--server URL`` (``TETHER_SERVER``) and ``--api-key-env NAME``."""
    fn = click.option("--api-key-env", default=DEFAULT_KEY_ENV, show_default=True,
                      metavar="NAME",
                      help="With --server: the environment variable holding the API key.")(fn)
    return click.option("--server", envvar="TETHER_SERVER", default=None, metavar="URL",
                        help="Act through this `tether serve` (http://HOST:PORT) instead of "
                             "the database; the API key decides the principal and tenant.")(fn)


@dataclass(frozen=True, slots=True)
class Remote:
    """A server to act through, and where its key is."""

    url: str
    key_env: str

    @contextlib.contextmanager
    def client(self) -> Iterator[Client]:
        """A client of the server; any failure becomes one line on stderr and exit 2, as
        ``run_async`` does for local commands."""
        key = os.environ.get(self.key_env) or None
        try:
            with Client(self.url, api_key=key) as client:
                yield client
        except Unauthenticated as exc:
            where = (f"the key comes from ${self.key_env}" if key else
                     f"${self.key_env} is not set: put a key from `tether keys issue` in it")
            fail(f"{exc.code}: {exc.message} ({where})")
        except TetherError as exc:
            fail(f"{exc.code}: {exc.message}")
        except httpx.HTTPError as exc:
            fail(f"usage: cannot reach the server at {self.url} ({str(exc) or type(exc).__name__}): "
                 "is `tether serve` running there? (--server, TETHER_SERVER)")


def remote_of(server: str | None, key_env: str, *, tenant: str | None = None,
              principal: str | None = None) -> Remote | None:
    """The server to act through, or None to act on the store here."""
    if not server:
        return None
    if tenant is not None or principal is not None:
        fail("usage: --tenant and --principal do not go with --server: the API key decides "
             "who acts (its principal and tenant)")
    parts = urllib.parse.urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        fail(f"usage: --server must be a URL like http://127.0.0.1:8000, not {server!r}")
    if not key_env:
        fail("usage: --api-key-env needs the name of an environment variable")
    return Remote(server.rstrip("/"), key_env)


# -- the wire back into the store's types ----------------------------------------------------

def _text(value: JSON) -> str:
    return json.dumps(value)


def run_from_json(data: JSONObject) -> Run:
    return Run(**{**data, "status": RunStatus(data["status"])})


def record_from_json(data: JSONObject) -> Record:
    return Record(seq=data["seq"], kind=data["kind"], name=data["name"], digest=data["digest"],
                  state=data["state"],
                  value=None if data["value"] is None else _text(data["value"]),
                  attempts=data["attempts"], started_at_ms=data["started_at_ms"],
                  finished_at_ms=data["finished_at_ms"],
                  detail=None if data["detail"] is None else _text(data["detail"]))


def approval_from_json(data: JSONObject) -> Approval:
    return Approval(**{**data, "args": _text(data["args"]),
                       "message": None if data["message"] is None else _text(data["message"]),
                       "policies": _text(data["policies"])})


# -- the commands' remote halves -----------------------------------------------------------

def list_runs(remote: Remote, *, status: str | None, agent: str | None,
              limit: int) -> tuple[list[Run], int, str]:
    """Like local ``runs ls``: (runs shown, runs the policies hid, who reads)."""
    shown: list[Run] = []
    hidden = 0
    with remote.client() as client:
        cursor = None
        # Page until `limit` runs are shown: the policies may hide some of each page.
        while len(shown) < limit:
            page = client.list_runs(status=status, agent=agent, limit=min(limit, 200),
                                    cursor=cursor)
            hidden += int(page.get("hidden") or 0)
            shown += [run_from_json(run) for run in page["runs"]][:limit - len(shown)]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        reader = str(client.whoami()["principal"]) if hidden else ""
    return shown, hidden, reader


def show_run(remote: Remote, run_id: str) -> tuple[Run, list[Record]]:
    with remote.client() as client:
        run = run_from_json(client.get(run_id))
        return run, [record_from_json(r) for r in client.journal(run_id)]


def cancel_run(remote: Remote, run_id: str, reason: str) -> Run:
    with remote.client() as client:
        return run_from_json(client.cancel(run_id, reason=reason))


def cancel_all(remote: Remote, *, agent: str | None, reason: str) -> tuple[list[Run], int]:
    """(runs cancelled, live runs the policies refused to let the key cancel)."""
    with remote.client() as client:
        outcome = client.cancel_all(agent=agent, reason=reason)
    return [run_from_json(run) for run in outcome["cancelled"]], int(outcome["refused"])


def signal_run(remote: Remote, run_id: str, name: str, data: str | None) -> Run:
    with remote.client() as client:
        return run_from_json(client.signal(run_id, name, parse_json(data, "--data")))


def resolve_run(remote: Remote, run_id: str, action: str, skip_with: str | None) -> Run:
    with remote.client() as client:
        value = parse_json(skip_with, "--skip-with") if action == "skip" else None
        return run_from_json(client.resolve(run_id, action, value))


def list_approvals(remote: Remote, *, status: str, limit: int) -> list[Approval]:
    with remote.client() as client:
        return [approval_from_json(a) for a in client.approvals(status=status, limit=limit)]


def decide(remote: Remote, approval_id: str, *, approve: bool, reason: str) -> Approval:
    with remote.client() as client:
        return approval_from_json(client.decide(approval_id, approve=approve, reason=reason))


def audit_verification(remote: Remote) -> tuple[AuditReport, bool]:
    """The server's report on the key's tenant, and whether its checkpoint key is pinned."""
    with remote.client() as client:
        found = client.audit_verify()
    report = AuditReport(
        records=int(found["records"]),
        problems=[Problem(p["tenant"], p["record"], p["message"]) for p in found["problems"]],
        unanchored=[Unanchored(u["tenant"], u["first"], u["last"])
                    for u in found["unanchored"]])
    return report, found["key"] == "pinned"
