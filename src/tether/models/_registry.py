"""Turning the names agents use (``"fast"``, ``"openai:gpt-4o-mini"``) into model objects.

One object per name for the life of a runtime, so each model keeps one SDK client and its
connection pool across every call and run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import assert_never

from tether.errors import ConfigError
from tether.models._anthropic import AnthropicModel
from tether.models._config import ModelConfig, parse_model_name
from tether.models._openai import OpenAIModel
from tether.models._protocol import Model
from tether.models._provider import ProviderModel


def build_model(name: str, config: ModelConfig, *,
                environ: Mapping[str, str] | None = None) -> ProviderModel:
    """The model object for one configuration (its client is made on the first call)."""
    if config.provider == "openai":
        return OpenAIModel(name, config, environ=environ)
    if config.provider == "anthropic":
        return AnthropicModel(name, config, environ=environ)
    assert_never(config.provider)


class ModelRegistry:
    """Models by name: given objects, configured names, and ``provider:model`` names.

    Args:
        models: model objects (named by their ``name``) and configurations by name.
        environ: where API keys and ``*_BASE_URL`` defaults are read (``os.environ``).
    """

    def __init__(self, models: Iterable[Model] | Mapping[str, Model | ModelConfig] = (), *,
                 environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._models: dict[str, Model] = {}
        self._configs: dict[str, ModelConfig] = {}
        self._built: list[ProviderModel] = []  # what this registry made, and so closes
        items = models.items() if isinstance(models, Mapping) else (
            (model.name, model) for model in models)
        for name, item in items:
            self.add(name, item)

    def add(self, name: str, model: Model | ModelConfig) -> None:
        """Register a model object or a configuration under ``name`` (replacing any)."""
        self._models.pop(name, None)
        if isinstance(model, ModelConfig):
            self._configs[name] = model
        else:
            self._models[name] = model

    def names(self) -> list[str]:
        """Every name registered (objects and configurations)."""
        return sorted({*self._models, *self._configs})

    def resolve(self, model: str | Model) -> Model:
        """The model for a name; ``provider:model`` names are made on first use.

        Raises:
            ConfigError: the name is neither registered nor ``provider:model``.
        """
        if not isinstance(model, str):
            return model
        found = self._models.get(model)
        if found is not None:
            return found
        config = self._configs.get(model)
        if config is None:
            if ":" not in model:
                raise ConfigError(
                    f"unknown model {model!r}; models known here: "
                    + (", ".join(self.names()) or "none")
                    + " (configure one in tether.toml as [models.NAME], or write "
                      "PROVIDER:MODEL, e.g. openai:gpt-4o-mini)")
            config = parse_model_name(model)
        built = build_model(model, config, environ=self._environ)
        self._models[model] = built
        self._built.append(built)
        return built

    async def aclose(self) -> None:
        """Close the clients of the models this registry made."""
        built, self._built = self._built, []
        for model in built:
            await model.aclose()
        for model in built:
            if self._models.get(model.name) is model:
                del self._models[model.name]
