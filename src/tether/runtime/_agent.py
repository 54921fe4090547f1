from __future__ import annotations

import hashlib
import importlib
import inspect
import typing
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, overload

import pydantic

from tether import _json
from tether.errors import AgentNotFound, ConfigError, UsageError
from tether.tools import Tool
from tether.tools._schema import explain
from tether.types import JSONObject

if TYPE_CHECKING:
    from tether.runtime._context import Context

AgentFunction = Callable[..., Coroutine[Any, Any, Any]]


def source_version(fn: Callable[..., Any]) -> str:
    """A version derived from the function's source: edit the code, get a new version."""
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        text = repr(code.co_code if code is not None else fn)
    return "src-" + hashlib.sha256(text.encode()).hexdigest()[:12]


class Agent:
    """An agent function with its name, version and tools. Create with ``@tether.agent``."""

    def __init__(self, fn: AgentFunction, *, name: str | None = None,
                 version: str | None = None, tools: Sequence[Tool] = ()) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigError(f"agent {fn.__name__} must be an `async def` function")
        params = list(inspect.signature(fn).parameters.values())
        if not params or params[0].kind not in (params[0].POSITIONAL_ONLY,
                                                params[0].POSITIONAL_OR_KEYWORD):
            raise ConfigError(f"agent {fn.__name__} must take the context as its first parameter")
        self.fn = fn
        self.name = name or fn.__name__
        self.version = version or source_version(fn)
        self.ref = f"{fn.__module__}:{fn.__qualname__}"
        self.tools: dict[str, Tool] = {}
        for item in tools:
            if not isinstance(item, Tool):
                raise ConfigError(f"agent {self.name}: {item!r} is not a tether.tool")
            if item.name in self.tools:
                raise ConfigError(f"agent {self.name}: two tools are named {item.name!r}")
            self.tools[item.name] = item
        self._input_adapter = _input_model(fn, self.name, params[1:])
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<tether.Agent {self.name} {self.version}>"

    async def __call__(self, ctx: Context, **input: Any) -> Any:
        return await self.fn(ctx, **input)

    @property
    def importable(self) -> bool:
        """Whether another process can find this agent from ``ref`` (a module-level name)."""
        return "<locals>" not in self.ref and not self.ref.startswith("__main__:")

    def validate_input(self, data: JSONObject) -> JSONObject:
        """Check a run's input against the function's parameters; returns it as JSON."""
        if not isinstance(data, dict):
            raise UsageError(f"agent {self.name}: input must be a JSON object, "
                             f"not {type(data).__name__}")
        if self._input_adapter is None:
            return _json.normalize(data)  # type: ignore[return-value]
        try:
            parsed = self._input_adapter.model_validate(data)
        except pydantic.ValidationError as exc:
            raise UsageError(f"agent {self.name}: invalid input: {explain(exc)}") from None
        return parsed.model_dump(mode="json", exclude_unset=True)


def _input_model(fn: AgentFunction, name: str, params: list[inspect.Parameter],
                 ) -> type[pydantic.BaseModel] | None:
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None  # **input accepts anything
    hints = typing.get_type_hints(fn)
    fields: dict[str, Any] = {
        p.name: (hints.get(p.name, Any), ... if p.default is p.empty else p.default)
        for p in params if p.kind not in (p.VAR_POSITIONAL,)}
    return pydantic.create_model(
        f"{name}_input", __config__=pydantic.ConfigDict(extra="forbid"), **fields)


@overload
def agent(fn: AgentFunction, /) -> Agent: ...


@overload
def agent(*, name: str | None = None, version: str | None = None,
          tools: Sequence[Tool] = ()) -> Callable[[AgentFunction], Agent]: ...


def agent(fn: AgentFunction | None = None, /, *, name: str | None = None,
          version: str | None = None, tools: Sequence[Tool] = (),
          ) -> Agent | Callable[[AgentFunction], Agent]:
    """Declare ``async def f(ctx: tether.Context, **input)`` as an agent.

    Args:
        name: the agent's name in runs and the CLI (default: the function's name).
        version: what runs are pinned to. Default: a hash of the function's source, so an
            edited agent never replays a journal written by different code. Set it to keep
            old runs resumable across edits you know are compatible.
        tools: the tools this agent may call by name.
    """
    if fn is not None:
        return Agent(fn)

    def decorate(f: AgentFunction) -> Agent:
        return Agent(f, name=name, version=version, tools=tools)
    return decorate


def load_agent(ref: str) -> Agent:
    """Import ``module:attribute`` and return the agent there.

    Raises:
        AgentNotFound: saying whether the module or the attribute is missing.
    """
    module_name, _, attribute = ref.partition(":")
    if not module_name or not attribute:
        raise AgentNotFound(f"{ref!r} is not MODULE:AGENT (for example myapp.agents:support)")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise AgentNotFound(f"cannot import module {module_name!r} for agent {ref!r}: {exc}"
                            ) from None
    except Exception as exc:  # noqa: BLE001 - the module's own code failed while importing
        raise AgentNotFound(f"importing module {module_name!r} for agent {ref!r} failed: "
                            f"{type(exc).__name__}: {exc}") from None
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise AgentNotFound(f"module {module_name!r} has no agent {attribute!r}")
    if not isinstance(target, Agent):
        raise AgentNotFound(f"{ref!r} is a {type(target).__name__}, not a @tether.agent")
    return target
