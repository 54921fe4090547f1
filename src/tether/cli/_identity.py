"""Who a command acts as (``--tenant``, ``--principal``), and what it may do to runs.

Without ``[governance]`` the identity only labels: a run started with it carries it, and
``--tenant`` narrows what the run commands see. With ``[governance]`` every run command is
decided by the policies for that principal: ``runs ls`` shows only the runs it may
``read_run``, ``runs show`` needs ``read_run``, ``runs cancel`` ``cancel_run``, ``signal``
``signal_run`` and ``resolve`` ``resolve_run``. A refusal exits 2 with the policies that
decided; a run of another tenant is reported as not found (its existence is not theirs to
learn). Changes (cancel, signal, resolve) are audited, allowed or not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from tether.cli._common import CLIState
from tether.errors import RunNotFound
from tether.governance import Governance
from tether.store import Store
from tether.types import Run

F = TypeVar("F", bound=Callable[..., Any])


def identity_options(fn: F) -> F:
    """``--tenant`` and ``--principal``, defaulting to the settings (``TETHER_TENANT``...)."""
    fn = click.option("--principal", default=None,
                      help="Act as this principal (default: the principal setting, "
                           "TETHER_PRINCIPAL).")(fn)
    return click.option("--tenant", default=None,
                        help="Act in this tenant (default: the tenant setting, "
                             "TETHER_TENANT).")(fn)


class Identity:
    """A command's tenant and principal, and the governance that judges them (if any)."""

    def __init__(self, state: CLIState, tenant: str | None, principal: str | None) -> None:
        settings = state.settings()
        self.tenant = tenant or settings.tenant
        self.principal = principal or settings.principal
        self.governance: Governance | None = state.governance()
        # Runs of other tenants are out of sight when governed or when asked for one tenant.
        self._scoped = self.governance is not None or tenant is not None

    @property
    def list_tenant(self) -> str | None:
        """The tenant ``runs ls`` lists, or None for every tenant."""
        return self.tenant if self._scoped else None

    def may_read(self, run: Run) -> bool:
        """Whether ``runs ls`` shows this run."""
        if self._scoped and run.tenant != self.tenant:
            return False
        return self.governance is None or self.governance.authorize_run(
            principal=self.principal, tenant=self.tenant, run=run, action="read_run").allowed

    async def check(self, store: Store, run: Run, action: str) -> Run:
        """The run, when this identity may do ``action`` on it.

        Raises:
            RunNotFound: the run belongs to another tenant.
            PolicyDenied: the policies refuse (naming them).
        """
        if self._scoped and run.tenant != self.tenant:
            raise RunNotFound(run.run_id)
        if self.governance is None:
            return run
        decision = self.governance.check_run(store, principal=self.principal,
                                             tenant=self.tenant, run=run, action=action)
        if action != "read_run":
            # This process ends soon: commit the record and anchor it in a checkpoint.
            await self.governance.audit.checkpoint(store, self.tenant)
        if not decision.allowed:
            raise decision.denied()
        return run

    async def load(self, store: Store, run_id: str, action: str) -> Run:
        """Read the run and ``check`` it."""
        run = await store.get_run(run_id)
        if run is None:
            raise RunNotFound(run_id)
        return await self.check(store, run, action)
