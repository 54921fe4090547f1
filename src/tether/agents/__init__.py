"""Ready-made agent loops built only on the public ``Context`` API.

Layout: ``_tool_loop.py`` (ToolLoop: model -> tools -> model until a final answer).
"""

from tether.agents._tool_loop import ToolLoop

__all__ = ["ToolLoop"]
