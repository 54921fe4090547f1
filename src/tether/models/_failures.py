"""One retry policy and one error vocabulary for both provider SDKs.

The SDKs' own retries are off (``max_retries=0``): an SDK that retried inside a call would
hide the attempts from the run's events and stack a second backoff on ours. Both SDKs raise
exceptions of the same shape (``APIStatusError`` with ``status_code`` and ``response``,
``APIConnectionError``, ``APITimeoutError``), so one classifier serves both; each provider
passes its own exception classes.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio

from tether.errors import (
    ContextOverflow,
    ModelAuthError,
    ModelBadResponse,
    ModelError,
    ModelNotFound,
    ModelRateLimited,
    ModelRequestRejected,
    ModelUnavailable,
)
from tether.models._config import ModelRetry
from tether.models._protocol import RetryCallback
from tether.types import ToolCall

T = TypeVar("T")

# Phrases providers use when the prompt does not fit (OpenAI, Anthropic, vLLM, llama.cpp).
_OVERFLOW_HINTS = ("context length", "context_length", "context window", "prompt is too long",
                   "maximum context", "too many tokens", "exceeds the context")


@dataclass(frozen=True, slots=True)
class SDKErrors:
    """An SDK's exception classes, by role."""

    status: type[BaseException]
    connection: type[BaseException]
    timeout: type[BaseException]
    transport: type[BaseException]
    """The HTTP library's transport errors: a stream cut mid-way raises these unwrapped."""


@dataclass(frozen=True, slots=True)
class CallSite:
    """What a person needs to find the model a failure came from, and the secret to hide."""

    name: str
    provider: str
    model: str
    base_url: str
    key_variable: str
    timeout_seconds: float
    secret: str = ""

    def who(self) -> str:
        return f"model {self.name!r} ({self.provider} {self.model} at {self.base_url})"

    def redact(self, text: str) -> str:
        """Provider text with the key cut out (some servers echo the key they refused)."""
        if self.secret and len(self.secret) >= 4:
            text = text.replace(self.secret, "[redacted]")
        return text[:400]

    def error(self, cls: type[ModelError], message: str, *, status: int | None = None,
              attempts: int = 1) -> ModelError:
        return cls(f"{self.who()}: {message}", model=self.name, base_url=self.base_url,
                   status=status, attempts=attempts)


def tool_call(name: str, arguments: str | None, call_id: str, site: CallSite) -> ToolCall:
    """A tool call from the arguments text a model sent. Text that is not a JSON object is
    kept (redacted, cut) as ``bad_arguments`` for the agent to hand back to the model, rather
    than failing the whole reply: a model's broken call is the model's to correct."""
    try:
        args = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        args = None
    if isinstance(args, dict):
        return ToolCall(name, args, call_id)
    return ToolCall(name, {}, call_id, bad_arguments=site.redact(arguments or ""))


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment (they may carry credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


@dataclass(slots=True)
class Failure:
    """A classified failure: the error to raise, and when a retry may come."""

    error: ModelError
    retry_after: float | None = None


def classify(exc: BaseException, site: CallSite, errors: SDKErrors, attempts: int) -> Failure:
    """Turn an SDK or transport exception into a Tether ``ModelError`` a person can act on."""
    if isinstance(exc, errors.timeout):
        return Failure(site.error(
            ModelUnavailable, f"no answer within {site.timeout_seconds:g} s (after {attempts} "
            "attempt(s)); raise the model's timeout or check the server's load", attempts=attempts))
    if isinstance(exc, errors.status):
        return _classify_status(exc, site, attempts)
    if isinstance(exc, (errors.connection, errors.transport)):
        detail = site.redact(str(exc) or type(exc).__name__)
        return Failure(site.error(
            ModelUnavailable, f"connection failed or dropped ({detail}) after {attempts} "
            "attempt(s); check that the server is running and that base_url is right",
            attempts=attempts))
    detail = site.redact(f"{type(exc).__name__}: {exc}")
    return Failure(site.error(
        ModelBadResponse, f"the reply could not be read ({detail}); check that base_url points "
        f"at a {site.provider}-compatible API", attempts=attempts))


def _classify_status(exc: BaseException, site: CallSite, attempts: int) -> Failure:
    status = int(getattr(exc, "status_code", 0))
    said = site.redact(_provider_message(exc))
    if status == 429:
        return Failure(site.error(
            ModelRateLimited, f"rate limited (429) after {attempts} attempt(s): {said}; lower the "
            "request rate, raise retry.max_attempts, or check the account's quota",
            status=status, attempts=attempts), _retry_after(exc))
    if status >= 500 or status in (408, 409):
        return Failure(site.error(
            ModelUnavailable, f"the server failed ({status}) after {attempts} attempt(s): {said}",
            status=status, attempts=attempts), _retry_after(exc))
    if status == 401:
        where = (f"the environment variable {site.key_variable}" if site.key_variable
                 else "the key (api_key_env is empty, so none was sent)")
        return Failure(site.error(
            ModelAuthError, f"the API key was refused (401): {said}; check that {where} holds a "
            f"valid key for {site.base_url}", status=status))
    if status == 403:
        return Failure(site.error(
            ModelAuthError, f"the key may not use this model (403): {said}; check the key's "
            "project and permissions, or the model id", status=status))
    if status == 404:
        return Failure(site.error(
            ModelNotFound, f"{site.base_url} answered 404 for model {site.model!r}: {said}; check "
            "the model id, and that base_url is the API root (for OpenAI-compatible servers it "
            "usually ends in /v1)", status=status))
    if status == 413 or any(hint in said.lower() for hint in _OVERFLOW_HINTS):
        return Failure(site.error(
            ContextOverflow, f"the conversation does not fit the model's context ({status}): "
            f"{said}; send less history or smaller tool results, or use a model with a larger "
            "context", status=status))
    return Failure(site.error(
        ModelRequestRejected, f"the request was refused ({status}): {said}; the message above is "
        "the provider's reason", status=status))


def _provider_message(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(exc, "message", "") or exc)


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the provider asked us to wait (``retry-after-ms``, ``Retry-After`` in seconds
    or as an HTTP date), or None."""
    response = getattr(exc, "response", None)
    headers: Any = getattr(response, "headers", None)
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return None if when is None else max(when.timestamp() - time.time(), 0.0)


async def with_retries(attempt: Callable[[], Awaitable[T]], *, policy: ModelRetry,
                       site: CallSite, errors: SDKErrors, on_retry: RetryCallback | None,
                       sleep: Callable[[float], Awaitable[None]] = anyio.sleep) -> T:
    """Call ``attempt`` until it succeeds, a failure is not worth retrying, or the policy's
    attempts run out; raise the classified ``ModelError``."""
    number = 1
    while True:
        try:
            return await attempt()
        except ModelError as exc:  # found by the provider code (a cut or unusable reply)
            exc.attempts = number
            failure = Failure(exc)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise classify(exc, site, errors, number).error from None
        except Exception as exc:  # noqa: BLE001 - every SDK failure is classified here
            failure = classify(exc, site, errors, number)
        error = failure.error
        if not error.retryable or number >= policy.max_attempts:
            raise error from None
        delay = policy.delay_after(number, random.random())  # noqa: S311 - jitter, not secrecy
        if failure.retry_after is not None:
            if failure.retry_after > policy.max_delay:
                raise site.error(
                    type(error), f"the provider asked to wait {failure.retry_after:g} s, longer "
                    f"than retry.max_delay ({policy.max_delay:g} s): {error.message}",
                    status=error.status, attempts=number) from None
            delay = max(delay, failure.retry_after)
        if on_retry is not None:
            on_retry(number, error.message, delay)
        await sleep(delay)
        number += 1
