"""End-to-end tests: real worker processes, real SIGKILLs, real SQLite files.

Layout: ``crash_agents.py`` (the agents the worker processes run, importable by them),
``harness.py`` (starting, killing and reaping processes; reading the execution log),
``strategies.py`` (hypothesis strategies for random agent programs).
"""
