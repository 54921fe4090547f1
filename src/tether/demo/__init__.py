"""``tether demo``: a support agent that is killed mid-run and resumed.

Layout: ``_agent.py`` (the agent, its tools and its scripted model), ``_show.py`` (the
driver: start a worker process, SIGKILL it, resume, tell what happened).
"""

from tether.demo._agent import support
from tether.demo._show import run_demo

__all__ = ["run_demo", "support"]
