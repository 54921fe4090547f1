"""sandbox (in progress)."""
