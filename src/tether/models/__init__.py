"""Models: the ``Model`` protocol, the scripted model, and the OpenAI and Anthropic providers.

Layout: ``_protocol.py`` (Model, ModelRequest, ToolSpec), ``_scripted.py`` (ScriptedModel,
deterministic, for tests, benchmarks and the demo), ``_config.py`` (``[models.NAME]`` tables
and ``provider:model`` names), ``_registry.py`` (names to model objects, one client each),
``_provider.py`` (what both SDK-backed models share), ``_openai.py`` and ``_anthropic.py``
(the SDK calls and message conversion), ``_failures.py`` (error mapping and the one retry
policy), ``_pricing.py`` (cost, offline).
"""

from tether.models._anthropic import AnthropicModel
from tether.models._config import (
    ModelConfig,
    ModelPrices,
    ModelRetry,
    load_model_configs,
    parse_model_name,
)
from tether.models._openai import OpenAIModel
from tether.models._pricing import Pricer, price_table_version
from tether.models._protocol import DeltaCallback, Model, ModelRequest, RetryCallback, ToolSpec
from tether.models._registry import ModelRegistry, build_model
from tether.models._scripted import ScriptedModel

__all__ = [
    "AnthropicModel", "DeltaCallback", "Model", "ModelConfig", "ModelPrices", "ModelRegistry",
    "ModelRequest", "ModelRetry", "OpenAIModel", "Pricer", "RetryCallback", "ScriptedModel", "ToolSpec",
    "build_model", "load_model_configs", "parse_model_name", "price_table_version",
]
