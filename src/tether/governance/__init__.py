"""governance (in progress)."""
