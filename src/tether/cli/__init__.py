"""The ``tether`` command line.

Layout: ``_main.py`` (the click group and its commands), ``_common.py`` (settings, JSON input,
errors as one line, exit codes), ``_format.py`` (human-readable lines).
"""

from tether.cli._main import cli, main

__all__ = ["cli", "main"]
