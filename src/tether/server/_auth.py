"""Who is calling, and may they touch this run: the server's whole access-control surface.

A request carries an API key (``Authorization: Bearer tk_...``, or the console's HttpOnly
cookie); the key stands for one principal of one tenant (``tether.governance.APIKeys``).
Tenancy is enforced here for every route: another tenant's run is reported as not found, so
ids of other tenants cannot even be probed. With ``[governance]``, the Cedar policies decide
``read_run``, ``cancel_run``, ``signal_run`` and ``resolve_run`` on top, through the same
``Governance.check_run`` the CLI uses (so a change is audited, allowed or not, whichever way
it came in); without it, a valid key of the tenant is enough.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from tether.errors import PolicyDenied, RunNotFound, Unauthenticated
from tether.governance import APIKeys, Governance
from tether.store import Store
from tether.types import Run

COOKIE = "tether_key"
"""The console's cookie holding the API key (HttpOnly, SameSite=Strict)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """The principal and tenant a request acts as."""

    principal: str
    tenant: str


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE) or None


class Gate:
    """Authentication and the per-run authorization hook.

    Args:
        keys: the API keys; None only with ``insecure_caller``.
        governance: when set, the actions on runs are also decided by its policies.
        store: where decisions on changes are audited (with ``governance``).
        insecure_caller: with no keys, every request acts as this caller (local trials only).
    """

    def __init__(self, keys: APIKeys | None, governance: Governance | None, store: Store,
                 insecure_caller: Caller | None = None) -> None:
        assert keys is not None or insecure_caller is not None, "no way to authenticate"
        self._keys = keys
        self._governance = governance
        self._store = store
        self._insecure = insecure_caller

    def identify(self, key: str) -> Caller | None:
        """Who ``key`` stands for, or None (always the insecure caller without keys)."""
        if self._keys is None:
            return self._insecure
        identity = self._keys.verify(key)
        return None if identity is None else Caller(identity.principal, identity.tenant)

    def caller(self, request: Request) -> Caller:
        """Who the request acts as; ``Unauthenticated`` without a valid key."""
        if self._keys is None:
            assert self._insecure is not None
            return self._insecure
        key = presented_key(request)
        if key is None:
            raise Unauthenticated("this server needs an API key: send "
                                  "`Authorization: Bearer tk_...`")
        caller = self.identify(key)
        if caller is None:
            raise Unauthenticated("the API key is unknown, revoked or malformed")
        # A cookie travels with any request the browser makes: a change made with one must
        # also carry a header that only a script of this origin can set.
        if (request.method not in ("GET", "HEAD") and "authorization" not in request.headers
                and request.headers.get("x-requested-with") != "tether-console"):
            raise Unauthenticated("a console request that changes something must carry "
                                  "X-Requested-With: tether-console")
        return caller

    def check_run(self, caller: Caller, run: Run, action: str = "read_run") -> Run:
        """The run, if ``caller`` may do ``action`` on it; ``RunNotFound`` for another
        tenant's run, ``PolicyDenied`` when the policies refuse."""
        if run.tenant != caller.tenant:
            raise RunNotFound(run.run_id)
        if self._governance is not None:
            decision = self._governance.check_run(self._store, principal=caller.principal,
                                                  tenant=caller.tenant, run=run, action=action)
            if not decision.allowed:
                raise decision.denied()
        return run

    def may_read(self, caller: Caller, run: Run) -> bool:
        """Whether ``check_run`` would pass (to filter lists without raising)."""
        try:
            self.check_run(caller, run)
        except (RunNotFound, PolicyDenied):
            return False
        return True
