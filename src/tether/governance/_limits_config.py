"""Reading ``[[governance.limits]]``, ``[governance.budgets]`` and ``[governance.residency]``
into their frozen settings, with errors that name the key and say what is allowed."""

from __future__ import annotations

from typing import Any

import pydantic

from tether.config import residency_tenants
from tether.errors import ConfigError
from tether.governance._budget import Allowance, BudgetConfig, PeriodBudget, RunBudget
from tether.governance._limits import RateLimit
from tether.governance._residency import ResidencyConfig
from tether.models import ModelPrices


def _table(raw: object, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    return raw


def _number(raw: object, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ConfigError(f"{where} must be a number, not {raw!r}")
    return float(raw)


def _strings(raw: object, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ConfigError(f"{where} must be a list of strings")
    return tuple(raw)


def _known(table: dict[str, Any], known: set[str], where: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"unknown key {where}.{key}; known keys: "
                              + ", ".join(sorted(known)))


def parse_limits(raw: object) -> tuple[RateLimit, ...]:
    """``[[governance.limits]]``: a list of tables."""
    if not isinstance(raw, list):
        raise ConfigError("governance.limits must be an array of tables ([[governance.limits]])")
    limits = []
    for i, item in enumerate(raw):
        where = f"governance.limits[{i}]"
        table = _table(item, where)
        _known(table, {"name", "per", "requests_per_minute", "tokens_per_minute", "burst",
                       "max_wait_seconds", "match", "kinds"}, where)
        values: dict[str, Any] = {"name": str(table.get("name", ""))}
        if "per" in table:
            values["per"] = _strings(table["per"], f"{where}.per")
        for key in ("requests_per_minute", "tokens_per_minute", "burst", "max_wait_seconds"):
            if key in table:
                values[key] = _number(table[key], f"{where}.{key}")
        if "match" in table:
            match = _table(table["match"], f"{where}.match")
            values["match"] = {str(k): str(v) for k, v in match.items()}
        if "kinds" in table:
            values["kinds"] = frozenset(_strings(table["kinds"], f"{where}.kinds"))
        limits.append(RateLimit(**values))
    names = [limit.name for limit in limits]
    if len(set(names)) != len(names):
        raise ConfigError("governance.limits: names must be unique (they key the state)")
    return tuple(limits)


def _allowance(table: dict[str, Any], where: str, extra: set[str]) -> dict[str, Any]:
    _known(table, {"tokens", "cost_usd", "tool_calls", "steps", *extra}, where)
    values: dict[str, Any] = {}
    for key in ("tokens", "tool_calls", "steps"):
        if key in table:
            values[key] = int(_number(table[key], f"{where}.{key}"))
    if "cost_usd" in table:
        values["cost_usd"] = _number(table["cost_usd"], f"{where}.cost_usd")
    return values


def parse_budgets(raw: object) -> BudgetConfig:
    """``[governance.budgets]``."""
    table = _table(raw, "governance.budgets")
    _known(table, {"run", "periods", "on_exhausted", "default_max_tokens", "prices"},
           "governance.budgets")
    values: dict[str, Any] = {}
    if "run" in table:
        run = _table(table["run"], "governance.budgets.run")
        fields = _allowance(run, "governance.budgets.run", {"wall_seconds"})
        if "wall_seconds" in run:
            fields["wall_seconds"] = _number(run["wall_seconds"],
                                             "governance.budgets.run.wall_seconds")
        values["run"] = RunBudget(**fields)
    if "periods" in table:
        if not isinstance(table["periods"], list):
            raise ConfigError("governance.budgets.periods must be an array of tables "
                              "([[governance.budgets.periods]])")
        periods = []
        for i, item in enumerate(table["periods"]):
            where = f"governance.budgets.periods[{i}]"
            period = _table(item, where)
            fields = _allowance(period, where, {"per", "period", "only"})
            for key in ("per", "period", "only"):
                if key in period:
                    fields[key] = str(period[key])
            periods.append(PeriodBudget(**fields))
        values["periods"] = tuple(periods)
    if "on_exhausted" in table:
        values["on_exhausted"] = str(table["on_exhausted"])
    if "default_max_tokens" in table:
        values["default_max_tokens"] = int(_number(table["default_max_tokens"],
                                                   "governance.budgets.default_max_tokens"))
    if "prices" in table:
        prices = {}
        for name, item in _table(table["prices"], "governance.budgets.prices").items():
            try:
                prices[name] = ModelPrices.model_validate(item)
            except pydantic.ValidationError as exc:
                raise ConfigError(f"governance.budgets.prices.{name}: "
                                  f"{exc.errors()[0]['msg']} (input and output, USD per "
                                  "million tokens)") from None
        values["prices"] = prices
    return BudgetConfig(**values)


def parse_residency(raw: object) -> ResidencyConfig:
    """``[governance.residency]``."""
    table = _table(raw, "governance.residency")
    _known(table, {"tenants", "regions"}, "governance.residency")
    # Read as [regions] reads it (tether.config), which also needs the order listed.
    tenants = {tenant: frozenset(regions)
               for tenant, regions in residency_tenants(table.get("tenants", {})).items()}
    regions = {}
    for key, region in _table(table.get("regions", {}), "governance.residency.regions").items():
        if not isinstance(region, str) or not region:
            raise ConfigError(f"governance.residency.regions.{key} must be a region name")
        regions[str(key)] = region
    return ResidencyConfig(tenants=tenants, regions=regions)


__all__ = ["Allowance", "parse_budgets", "parse_limits", "parse_residency"]
