"""The HTTP API and web console of ``tether serve`` (Starlette, served by uvicorn).

Layout: ``_app.py`` (``create_app``, ``ServerOptions``), ``_routes_runs.py`` (runs, their
journals and event streams), ``_routes_governance.py`` (approvals, audit, spend),
``_stream.py`` (server-sent events and what they guarantee), ``_auth.py`` (API keys, tenancy
and the per-run authorization hook), ``_errors.py`` (error codes to HTTP statuses),
``_metrics.py`` (Prometheus), ``_openapi.py`` (the API document), ``_console.py`` and
``static/`` (the console), ``_serve.py`` (uvicorn with embedded workers).
"""

from tether.server._app import ServerOptions, create_app
from tether.server._auth import Caller
from tether.server._openapi import openapi_document

__all__ = ["Caller", "ServerOptions", "create_app", "openapi_document"]
