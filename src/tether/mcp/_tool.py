"""``MCPTool``: a tool of an MCP server as a Tether ``Tool``.

It is a ``Tool`` like any ``@tether.tool`` function, so a call passes the same pipeline: the
journal (a recorded call is replayed, never sent again), argument validation (here against the
server's JSON schema, before a side effect's intent is recorded), the intent of a side effect,
events, the timeout (the call is cancelled and the server told), retries and the concurrency
cap. What differs is where the schema comes from: the server's tool listing, which exists only
once the server has been started, so ``spec`` is known from then on.
"""

from __future__ import annotations

import logging
from typing import Any

import jsonschema
import mcp.types

from tether.errors import ToolArgumentError, ToolError, UsageError
from tether.mcp._config import ToolOptions
from tether.mcp._connection import ServerConnection
from tether.models import ToolSpec
from tether.tools import Retry, Tool, ToolContext
from tether.types import JSON, JSONObject

logger = logging.getLogger("tether.mcp")

RETRY_INITIAL_SECONDS = 0.5


class MCPTool(Tool):
    """A tool offered by an MCP server. Get one from ``MCPServers.tool`` or ``.tools``.

    Attributes:
        server: the name of the server.
        remote_name: the tool's name on the server (``name`` adds the server's prefix).
        region: where the tool sends data, for residency rules.
    """

    def __init__(self, connection: ServerConnection, remote_name: str) -> None:
        options: ToolOptions = connection.config.options_for(remote_name)
        self._connection = connection
        self._listed: mcp.types.Tool | None = None
        self._spec: ToolSpec | None = None
        self._validator: Any = None
        self.server = connection.name
        self.remote_name = remote_name
        self.region = options.region
        attempts = options.max_attempts or 1

        async def call(arguments: dict[str, Any], context: ToolContext) -> JSON:
            return await self._call(arguments, context)

        super().__init__(
            call, name=connection.config.prefix + remote_name, description="",
            timeout=options.timeout, side_effects=bool(options.side_effects),
            idempotent=bool(options.idempotent),
            max_concurrency=connection.config.max_concurrency,
            retry=Retry(max_attempts=attempts, initial_delay=RETRY_INITIAL_SECONDS))

    def __repr__(self) -> str:
        return f"<tether.mcp.MCPTool {self.name} on {self.server}>"

    @property
    def spec(self) -> ToolSpec:
        """What a model sees: the name, and the description and schema the server listed.

        Raises:
            UsageError: the server has not been started yet, so its schema is unknown.
        """
        listed = self._connection.listed(self.remote_name)
        if listed is None:
            raise UsageError(
                f"the schema of MCP tool {self.name!r} is not known until server {self.server!r} "
                "has listed its tools: `await servers.start()` (or `async with servers:`) before "
                "offering its tools to a model")
        if listed is not self._listed or self._spec is None:
            self._refresh(listed)
        assert self._spec is not None
        return self._spec

    @spec.setter
    def spec(self, value: ToolSpec) -> None:
        pass  # Tool.__init__ sets a spec from the Python signature; the server's one wins

    def _refresh(self, listed: mcp.types.Tool) -> None:
        schema = {key: value for key, value in listed.input_schema.items() if key != "$schema"}
        self.description = listed.description or ""
        self._spec = ToolSpec(self.name, self.description, schema)
        try:
            cls = jsonschema.validators.validator_for(listed.input_schema)
            cls.check_schema(listed.input_schema)
            self._validator = cls(listed.input_schema)
        except jsonschema.SchemaError as exc:
            # The server will check the arguments itself; we cannot.
            logger.warning("MCP tool %s on %s has an invalid input schema (%s); its arguments "
                           "are passed on unchecked", self.remote_name, self.server, exc.message)
            self._validator = None
        self._listed = listed

    def validate(self, args: JSONObject) -> dict[str, Any]:
        """Check the arguments against the schema the server listed.

        Raises:
            ToolArgumentError: saying which argument is wrong and why (a model can correct it).
        """
        if not isinstance(args, dict):
            raise ToolArgumentError(self.name, f"arguments must be a JSON object, not "
                                               f"{type(args).__name__}")
        listed = self._connection.listed(self.remote_name)
        if listed is not None:
            if listed is not self._listed:
                self._refresh(listed)
            if self._validator is not None:
                problems = [
                    f"{'.'.join(str(part) for part in error.absolute_path) or 'arguments'}: "
                    f"{error.message}"
                    for error in self._validator.iter_errors(args)]
                if problems:
                    raise ToolArgumentError(self.name, f"invalid arguments for {self.name}: "
                                                       + "; ".join(problems))
        # Not listed yet (a call before any model saw the tool): the server checks them.
        return {"arguments": args}

    async def _call(self, arguments: dict[str, Any], context: ToolContext) -> JSON:
        async def report(progress: float, total: float | None, message: str | None) -> None:
            context.progress(progress, total, message)

        result = await self._connection.call(self.remote_name, self.name, arguments, report)
        if result.is_error:
            raise ToolError(self.name, _text(result) or f"{self.name} failed (no message)",
                            error_type="MCPToolError")
        return result_value(result)


def result_value(result: mcp.types.CallToolResult) -> JSON:
    """What the agent (and journal) gets from a tool result: the structured content when there
    is some, else the text, else the content blocks as JSON."""
    if result.structured_content is not None:
        return result.structured_content  # type: ignore[no-any-return]
    if all(isinstance(block, mcp.types.TextContent) for block in result.content):
        return _text(result)
    return {"content": [block.model_dump(mode="json", by_alias=True, exclude_none=True)
                        for block in result.content]}


def _text(result: mcp.types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content
                     if isinstance(block, mcp.types.TextContent))
