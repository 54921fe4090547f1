"""Models: the ``Model`` protocol every provider implements, and the scripted model.

Layout: ``_protocol.py`` (Model, ModelRequest, ToolSpec) and ``_scripted.py`` (ScriptedModel,
deterministic, for tests, benchmarks and the demo). Real providers arrive beside them.
"""

from tether.models._protocol import DeltaCallback, Model, ModelRequest, ToolSpec
from tether.models._scripted import ScriptedModel

__all__ = ["DeltaCallback", "Model", "ModelRequest", "ScriptedModel", "ToolSpec"]
