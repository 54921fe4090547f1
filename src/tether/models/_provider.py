"""What the OpenAI and Anthropic models share: one SDK client per model (connections are
reused across calls and runs), the key read from its environment variable, the retry loop,
and usage priced once the reply is in."""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping
from typing import Any

from tether.errors import ConfigError, ModelAuthError
from tether.models._config import ModelConfig
from tether.models._failures import CallSite, SDKErrors, public_url, with_retries
from tether.models._pricing import Pricer
from tether.models._protocol import ModelRequest
from tether.types import Reply

# A key some SDKs insist on even when the server needs none (api_key_env = "").
NO_KEY = "not-needed"


class ProviderModel(abc.ABC):
    """Base of the SDK-backed models. Subclasses make the client and carry out one attempt."""

    provider: str = ""
    extra: str = ""  # the pip extra that installs the SDK
    default_base_url: str = ""  # where the provider's API is when the config names none

    def __init__(self, name: str, config: ModelConfig, *,
                 environ: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.config = config
        self.region = config.region
        self._environ = os.environ if environ is None else environ
        self._client: Any = None
        self._site: CallSite | None = None
        self._errors: SDKErrors | None = None
        self._pricer = Pricer(config.provider, config.model, config.prices)

    def __repr__(self) -> str:  # never the key: only where the model is
        return f"{type(self).__name__}(name={self.name!r}, model={self.config.model!r})"

    async def complete(self, request: ModelRequest) -> Reply:
        """Call the model, retrying per ``config.retry``; stream when ``on_delta`` is set."""
        client, site, errors = self._connect()
        reply: Reply = await with_retries(
            lambda: self._attempt(client, site, request), policy=self.config.retry, site=site,
            errors=errors, on_retry=request.on_retry)
        cost = self._pricer.cost_usd(reply.usage)
        if cost is None:
            return reply
        usage = reply.usage
        return Reply(reply.text, reply.tool_calls, type(usage)(
            usage.input_tokens, usage.output_tokens, usage.cache_read_tokens,
            usage.cache_write_tokens, cost))

    def _connect(self) -> tuple[Any, CallSite, SDKErrors]:
        if self._client is not None and self._site is not None and self._errors is not None:
            return self._client, self._site, self._errors
        config = self.config
        variable = config.key_variable()
        base_url = config.resolved_base_url(self._environ)
        key = self._environ.get(variable) if variable else NO_KEY
        site = CallSite(self.name, self.provider, config.model,
                        public_url(base_url or self.default_base_url), variable, config.timeout)
        if not key:
            raise site.error(ModelAuthError, (
                f"the environment variable {variable} is not set; export the API key in it, or "
                f"name another variable in models.{self.name}.api_key_env (\"\" for a server "
                "that needs no key)"))
        try:
            self._client, self._errors = self._make_client(key, base_url)
        except ImportError:
            raise ConfigError(f"model {self.name!r} needs the {self.provider} SDK: install "
                              f"tether[{self.extra}]") from None
        self._site = CallSite(site.name, site.provider, site.model,
                              public_url(str(self._client.base_url)), variable, config.timeout,
                              secret=key if variable else "")
        return self._client, self._site, self._errors

    @abc.abstractmethod
    def _make_client(self, key: str, base_url: str | None) -> tuple[Any, SDKErrors]:
        """The SDK's async client, and the SDK's error classes for the retry loop."""

    @abc.abstractmethod
    async def _attempt(self, client: Any, site: CallSite, request: ModelRequest) -> Reply:
        """One call to the model (streamed when ``request.on_delta`` is set)."""

    async def aclose(self) -> None:
        """Close the client's connections (the runtime does, when it closes)."""
        client, self._client, self._site = self._client, None, None
        if client is not None:
            await client.close()
