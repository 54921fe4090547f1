"""The Python client of Tether's HTTP API.

Layout: ``_client.py`` (``Client``, ``AsyncClient``, errors from responses), ``_sse.py``
(server-sent events).
"""

from tether.client._client import AsyncClient, Client, error_from_response
from tether.client._sse import ServerEvent

__all__ = ["AsyncClient", "Client", "ServerEvent", "error_from_response"]
