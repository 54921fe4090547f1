"""The public API: ``__all__`` lists exactly what the package offers, and it is documented."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from types import ModuleType
from typing import Any

import pytest

import tether

# Modules users import from directly; each keeps an honest ``__all__``.
PUBLIC_MODULES = ["tether", "tether.testing", "tether.agents", "tether.models", "tether.tools"]


def public_names(module: ModuleType) -> set[str]:
    """Names a module offers: not private, not a submodule, not ``from __future__ import``."""
    return {name for name, value in vars(module).items()
            if not name.startswith("_") and not isinstance(value, ModuleType)
            and type(value).__module__ != "__future__"}


def test_all_matches_public_names() -> None:
    assert sorted(tether.__all__) == sorted(public_names(tether))


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_each_public_module_lists_exactly_its_public_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert len(module.__all__) == len(set(module.__all__)), "a name is listed twice"
    assert sorted(module.__all__) == sorted(public_names(module))


@pytest.mark.parametrize("name", tether.__all__)
def test_every_name_in_all_is_importable_from_the_package(name: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"from tether import {name}", namespace)  # noqa: S102 - the statement users write
    assert namespace[name] is getattr(tether, name)
    assert getattr(namespace[name], "__module__", "tether").startswith("tether")


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, Any] = {}
    exec("from tether import *", namespace)  # noqa: S102 - the statement users write
    assert sorted(set(namespace) - {"__builtins__"}) == sorted(tether.__all__)


def test_the_version_is_the_installed_distribution_version() -> None:
    assert tether.__version__ == importlib.metadata.version("tether")


def public_callables() -> list[tuple[str, Any]]:
    found = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        found += [(f"{module_name}.{name}", getattr(module, name)) for name in module.__all__
                  if inspect.isclass(getattr(module, name))
                  or inspect.isroutine(getattr(module, name))]
    return found


@pytest.mark.parametrize(("qualified", "obj"), public_callables(),
                         ids=[q for q, _ in public_callables()])
def test_every_public_callable_has_a_docstring(qualified: str, obj: Any) -> None:
    doc = inspect.getdoc(obj)
    assert doc, f"{qualified} has no docstring"
    assert not doc.startswith(" "), qualified


def undocumented_methods() -> list[str]:
    missing = []
    for qualified, obj in public_callables():
        if not inspect.isclass(obj) or not obj.__module__.startswith("tether"):
            continue
        for attr, value in vars(obj).items():
            if attr.startswith("_"):
                continue
            function = value.fget if isinstance(value, property) else value
            if isinstance(function, staticmethod | classmethod):
                function = function.__func__
            if callable(function) and not inspect.getdoc(function):
                missing.append(f"{qualified}.{attr}")
    return sorted(set(missing))


def test_every_public_method_of_a_public_class_has_a_docstring() -> None:
    assert undocumented_methods() == []
