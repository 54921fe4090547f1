"""mcp (in progress)."""
