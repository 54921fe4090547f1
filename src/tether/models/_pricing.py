"""What a model call cost, computed offline: the ``genai-prices`` table shipped with the package
(never updated over the network), or the model's ``prices`` from configuration."""

from __future__ import annotations

import datetime
import functools
from decimal import Decimal
from typing import Any

from tether.models._config import ModelPrices
from tether.types import Usage

_MILLION = Decimal(1_000_000)
_FLAT_FIELDS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")


class Pricer:
    """Prices one model's calls. Looks the model up once; a model the table does not know
    (a local server's, say) costs None, not 0, so budgets can tell "free" from "unknown"."""

    def __init__(self, provider: str, model: str, overrides: ModelPrices | None) -> None:
        self._overrides = overrides
        self._table: Any = None if overrides is not None else _table_price(provider, model)

    def cost_usd(self, usage: Usage) -> float | None:
        """The cost of ``usage`` in USD, or None when no price is known."""
        if self._overrides is not None:
            prices = self._overrides
            read = prices.input if prices.cache_read is None else prices.cache_read
            write = prices.input if prices.cache_write is None else prices.cache_write
            return _flat(usage, Decimal(str(prices.input)), Decimal(str(prices.output)),
                         Decimal(str(read)), Decimal(str(write)))
        price = self._table
        if price is None:
            return None
        flat = [getattr(price, name, None) for name in _FLAT_FIELDS]
        if all(value is None or isinstance(value, Decimal) for value in flat):
            # The common case, without building a genai-prices Usage per call.
            per_input, per_output = flat[0] or Decimal(0), flat[1] or Decimal(0)
            return _flat(usage, per_input, per_output,
                         per_input if flat[2] is None else flat[2],
                         per_input if flat[3] is None else flat[3])
        from genai_prices import Usage as PricedUsage  # tiered prices: the table's own sums

        result = price.calc_price(PricedUsage(
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens))
        return float(result["total_price"])


def _flat(usage: Usage, given: Decimal, output: Decimal, read: Decimal, write: Decimal) -> float:
    uncached = max(usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens, 0)
    total = (uncached * given + usage.cache_read_tokens * read + usage.cache_write_tokens * write
             + usage.output_tokens * output) / _MILLION
    return float(total)


def price_table_version(overrides: ModelPrices | None = None) -> str:
    """Which prices a cost came from, for the audit trail: the configured prices, or the
    ``genai-prices`` release and the date of its bundled snapshot."""
    if overrides is not None:
        return "config"
    return _table_version()


@functools.lru_cache(maxsize=1)
def _table_version() -> str:
    from importlib.metadata import version

    from genai_prices import data_snapshot

    stamp = data_snapshot.get_snapshot().timestamp
    return f"genai-prices {version('genai-prices')} ({stamp:%Y-%m-%d})"


@functools.lru_cache(maxsize=256)
def _table_price(provider: str, model: str) -> Any:
    from genai_prices import data_snapshot  # imported on first use: it loads a large table

    try:
        _, found = data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
    except LookupError:
        return None
    return found.get_prices(datetime.datetime.now(tz=datetime.UTC))
