"""What the provider tests share: the sentinel key, the server handle, the model ids."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.models import ModelConfig

FIXTURES = Path(__file__).parent / "fixtures"
SENTINEL_KEY = "sk-tether-sentinel-5f1c9a7e"
"""The only key the server accepts; it must never appear in anything Tether records."""
KEY_VARIABLE = "PROVIDER_TEST_API_KEY"
PROVIDERS = ["openai", "anthropic"]
MakeConfig = Callable[..., ModelConfig]
"""``make_config(provider, headers=..., retry=...)`` (the fixture of that name)."""
MODEL_IDS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}


@dataclass(frozen=True)
class ModelServer:
    url: str

    def base_url(self, provider: str) -> str:
        return f"{self.url}/v1" if provider == "openai" else self.url

    def requests(self, test_id: str) -> list[dict[str, Any]]:
        """The requests the server saw from one test (its journal, newest last)."""
        request = urllib.request.Request(f"{self.url}/__aimock/journal",  # noqa: S310 - loopback
                                         headers={"Authorization": f"Bearer {SENTINEL_KEY}"})
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            entries: list[dict[str, Any]] = json.load(response)
        return [e for e in entries
                if {k.lower(): v for k, v in e.get("headers", {}).items()}.get("x-test-id")
                == test_id]
