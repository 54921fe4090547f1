"""Tools: typed Python functions an agent (or a model) may call.

Layout: ``_tool.py`` (the ``@tool`` decorator, ``Tool``, ``Retry``, ``ToolContext``),
``_schema.py`` (JSON schema and argument validation from type hints), ``_invoke.py`` (one call:
timeout, retries with backoff and jitter, concurrency cap, the sandbox route), ``_builtin.py``
(``python_exec`` and ``shell_exec``, sandboxed). Tools know nothing of journals;
the runtime wraps each call in a journal step.
"""

from tether.tools._builtin import python_exec, shell_exec
from tether.tools._invoke import invoke
from tether.tools._tool import Retry, Tool, ToolContext, tool

__all__ = ["Retry", "Tool", "ToolContext", "invoke", "python_exec", "shell_exec", "tool"]
