"""``tether demo --model NAME`` runs the same support agent on a configured model (here the
scripted server through the OpenAI SDK), SIGKILLs it mid-run and resumes it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .provider_support import KEY_VARIABLE, SENTINEL_KEY, ModelServer


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_the_demo_runs_on_a_configured_model_and_survives_the_crash(
        provider: str, model_server: ModelServer, tmp_path: Path, test_id: str) -> None:
    config = tmp_path / "tether.toml"
    # Each request waits 300 ms at the server, so the crash lands while the model "thinks".
    config.write_text(f"""
[models.support-model]
provider = "{provider}"
model = "{"gpt-4o-mini" if provider == "openai" else "claude-haiku-4-5"}"
base_url = "{model_server.base_url(provider)}"
api_key_env = "{KEY_VARIABLE}"
headers = {{ "x-test-id" = "{test_id}", "x-aimock-chaos-latency" = "300" }}
""", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "tether", "--config", str(config), "demo", "--model",
         "support-model", "--dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=90, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", KEY_VARIABLE: SENTINEL_KEY})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SIGKILL" in done.stdout
    assert "Your grinder is reserved and the receipt is on its way." in done.stdout
    assert SENTINEL_KEY not in done.stdout + done.stderr
    outbox = (tmp_path / "demo" / "outbox.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(outbox) == 1
