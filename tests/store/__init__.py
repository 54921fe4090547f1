"""Tests of the ``Store`` protocol, run against every engine, and of SQLite's own behaviour."""
