"""The runtime: the composition root that turns agent code into durable runs.

Layout: ``_runtime.py`` (Runtime, RunHandle: claiming, driving, parking, waking runs),
``_context.py`` (Context: the agent's only door to the world), ``_pipeline.py`` (the effect
pipeline and its core stages), ``_executors.py`` (where effects act), ``_agent.py`` (the
``@agent`` decorator and version pinning), ``_events.py`` (the in-process event bus),
``_owner.py`` (worker identity and dead-worker detection).
"""

from tether.runtime._agent import Agent, agent, load_agent
from tether.runtime._context import ChildRun, Context
from tether.runtime._events import Event, EventBus, Subscription
from tether.runtime._owner import owner_is_dead
from tether.runtime._pipeline import Admission, Closing, Effect, Handler, RunScope, Stage, Suspended
from tether.runtime._runtime import RunHandle, Runtime

__all__ = ["Admission", "Agent", "ChildRun", "Closing", "Context", "Effect", "Event", "EventBus", "Handler",
           "RunHandle", "Runtime", "RunScope", "Stage", "Subscription", "Suspended", "agent", "load_agent",
           "owner_is_dead"]
