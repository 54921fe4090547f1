"""``[models.NAME]`` in tether.toml, ``TETHER_MODELS__*`` overrides, ``provider:model`` names,
prices, and errors that name the file (or variable), the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

import tether
from tether.config import load_settings
from tether.errors import ConfigError
from tether.models import (
    ModelConfig,
    ModelPrices,
    ModelRegistry,
    OpenAIModel,
    load_model_configs,
    parse_model_name,
)
from tether.models._anthropic import to_anthropic
from tether.models._pricing import Pricer
from tether.types import Usage

FULL = """
[runtime]
durability = "process"

[models.fast]
provider = "openai"
model = "gpt-4o-mini"
base_url = "http://127.0.0.1:8000/v1"
api_key_env = "LOCAL_KEY"
region = "eu"
timeout = 12.5
headers = { "X-Gateway" = "blue" }

[models.fast.retry]
max_attempts = 6
initial_delay = 0.25

[models.fast.prices]
input = 1.0
output = 2.0

[models.careful]
provider = "anthropic"
model = "claude-haiku-4-5"
"""


@pytest.fixture(autouse=True)
def _in_empty_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tether.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_models_tables_are_read_with_their_nested_retry_and_prices(tmp_path: Path) -> None:
    configs = load_model_configs(write(tmp_path, FULL), environ={})
    fast = configs["fast"]
    assert (fast.provider, fast.model, fast.region, fast.timeout) == (
        "openai", "gpt-4o-mini", "eu", 12.5)
    assert fast.headers == {"X-Gateway": "blue"}
    assert (fast.retry.max_attempts, fast.retry.initial_delay, fast.retry.backoff) == (6, 0.25, 2.0)
    assert fast.prices == ModelPrices(input=1.0, output=2.0)
    assert configs["careful"].key_variable() == "ANTHROPIC_API_KEY"


def test_the_runtime_loader_and_the_models_loader_each_ignore_the_other_table(
        tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    assert load_settings(path, environ={}).durability == "process"
    assert set(load_model_configs(path, environ={})) == {"fast", "careful"}


def test_environment_variables_override_and_add_models(tmp_path: Path) -> None:
    configs = load_model_configs(write(tmp_path, FULL), environ={
        "TETHER_MODELS__FAST__TIMEOUT": "30",
        "TETHER_MODELS__FAST__RETRY__MAX_ATTEMPTS": "2",
        "TETHER_MODELS__FAST__HEADERS__X_TEST_ID": "abc",
        "TETHER_MODELS__LOCAL__PROVIDER": "openai",
        "TETHER_MODELS__LOCAL__MODEL": "llama3.2",
        "TETHER_MODELS__LOCAL__API_KEY_ENV": "",
    })
    assert configs["fast"].timeout == 30
    assert configs["fast"].retry.max_attempts == 2
    assert configs["fast"].headers == {"X-Gateway": "blue", "x-test-id": "abc"}
    assert configs["local"].model == "llama3.2"
    assert configs["local"].key_variable() == ""


@pytest.mark.parametrize(("text", "expected"), [
    ('[models.a]\nprovider = "gemini"\nmodel = "x"',
     r"tether.toml: models.a.provider: Input should be 'openai' or 'anthropic', not 'gemini'"),
    ('[models.a]\nprovider = "openai"\nmodel = "x"\ntimeout = -1',
     r"tether.toml: models.a.timeout: Input should be greater than 0, not -1"),
    ('[models.a]\nprovider = "openai"\nmodel = "x"\ncolour = "red"',
     r"tether.toml: unknown key models.a.colour; allowed: provider, model, base_url"),
    ('[models.a]\nprovider = "openai"',
     r"tether.toml: models.a needs model \(the provider's model id"),
    ('[models.a]\nprovider = "openai"\nmodel = "x"\n[models.a.retry]\ntries = 3',
     r"unknown key models.a.retry.tries; allowed: max_attempts, initial_delay"),
    ('[models.a]\nprovider = "openai"\nmodel = "x"\nbase_url = "127.0.0.1:8000"',
     r"models.a.base_url: must start with http:// or https://"),
    ("models = 3", r"tether.toml: models must be tables like \[models.fast\]"),
])
def test_a_bad_models_table_names_the_file_the_key_and_what_is_allowed(
        tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_model_configs(write(tmp_path, text), environ={})


def test_a_key_written_into_the_file_is_refused_without_being_repeated(tmp_path: Path) -> None:
    secret = "sk-live-do-not-print-me"  # noqa: S105 - a sentinel, not a key
    for line in (f'api_key = "{secret}"', f'api_key_env = "{secret}"'):
        path = write(tmp_path, f'[models.a]\nprovider = "openai"\nmodel = "x"\n{line}\n')
        with pytest.raises(ConfigError) as refused:
            load_model_configs(path, environ={})
        assert secret not in refused.value.message
        assert "environment variable" in refused.value.message


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^TETHER_MODELS__FAST__TIMEOUT: models.fast.timeout"):
        load_model_configs(write(tmp_path, FULL),
                           environ={"TETHER_MODELS__FAST__TIMEOUT": "soon"})
    with pytest.raises(ConfigError, match="expected TETHER_MODELS__NAME__KEY"):
        load_model_configs(None, environ={"TETHER_MODELS__FAST": "x"})


def test_provider_colon_model_names_resolve_with_provider_defaults() -> None:
    config = parse_model_name("openai:gpt-4o-mini")
    assert (config.provider, config.model, config.key_variable()) == (
        "openai", "gpt-4o-mini", "OPENAI_API_KEY")
    assert config.resolved_base_url({"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}) == (
        "http://127.0.0.1:1/v1")
    registry = ModelRegistry(environ={})
    model = registry.resolve("openai:gpt-4o-mini")
    assert isinstance(model, OpenAIModel)
    assert registry.resolve("openai:gpt-4o-mini") is model  # one object, one client


@pytest.mark.parametrize("name", ["fast", "gemini:pro", "openai:"])
def test_an_unknown_model_name_says_how_to_name_one(name: str) -> None:
    with pytest.raises(ConfigError, match=r"PROVIDER:MODEL"):
        ModelRegistry(environ={}).resolve(name)


@pytest.mark.anyio
async def test_a_runtime_without_settings_reads_models_from_tether_toml(tmp_path: Path) -> None:
    write(tmp_path, FULL)
    async with tether.Runtime("memory://") as rt:
        model = rt._model("fast")
        assert isinstance(model, OpenAIModel)
        assert model.config.base_url == "http://127.0.0.1:8000/v1"


def test_configured_prices_replace_the_table_and_cached_tokens_default_to_input() -> None:
    pricer = Pricer("openai", "gpt-4o-mini", ModelPrices(input=1.0, output=2.0, cache_read=0.5))
    usage = Usage(input_tokens=1_000_000, output_tokens=500_000, cache_read_tokens=200_000)
    assert pricer.cost_usd(usage) == pytest.approx(0.8 * 1.0 + 0.2 * 0.5 + 0.5 * 2.0)


def test_table_prices_count_cached_tokens_at_their_own_rate() -> None:
    pricer = Pricer("openai", "gpt-4o-mini", None)  # $0.15 in, $0.075 cached, $0.6 out
    usage = Usage(input_tokens=1000, output_tokens=100, cache_read_tokens=500)
    assert pricer.cost_usd(usage) == pytest.approx((500 * 0.15 + 500 * 0.075 + 100 * 0.6) / 1e6)
    assert Pricer("openai", "my-local-llama", None).cost_usd(usage) is None


def test_usage_written_before_cost_existed_still_reads() -> None:
    old = {"input_tokens": 3, "output_tokens": 4, "cache_read_tokens": 0, "cache_write_tokens": 0}
    assert Usage.from_json(old) == Usage(3, 4)
    assert "cost_usd" not in Usage(3, 4).to_json()
    assert Usage.from_json(Usage(3, 4, cost_usd=0.5).to_json()).cost_usd == 0.5


def test_openai_style_messages_become_anthropic_turns() -> None:
    system, turns = to_anthropic([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "Looking.", "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"error": "down"}', "is_error": True},
        {"role": "user", "content": [{"type": "text", "text": "and now?"}]},
    ])
    assert system == "Be brief."
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]  # tool result + text merged
    assert turns[1]["content"] == [
        {"type": "text", "text": "Looking."},
        {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Paris"}}]
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c1", "content": '{"error": "down"}',
         "is_error": True},
        {"type": "text", "text": "and now?"}]


def test_a_model_config_is_frozen() -> None:
    config = ModelConfig(provider="openai", model="x")
    with pytest.raises(Exception, match="frozen"):
        config.model = "y"
