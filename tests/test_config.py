"""Settings: defaults < tether.toml [runtime] < TETHER_* environment < explicit overrides, and
errors that say where the bad value came from, which key, and what is allowed."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import tether.config
from tether.config import DEFAULT_DB, SETTINGS, Settings, load_settings
from tether.errors import ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(autouse=True)
def _in_empty_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ./tether.toml unless a test writes one."""
    monkeypatch.chdir(tmp_path)


def write_toml(tmp_path: Path, text: str, name: str = "tether.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def toml_value(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def samples(name: str) -> tuple[object, object, object]:
    """Three valid values for a setting, each different from the one before:
    (in the file, in the environment, as an override)."""
    field = next(f for f in dataclasses.fields(Settings) if f.name == name)
    if name == "db":
        return "sqlite:///from-file.db", "sqlite:///from-env.db", "memory://"
    if name == "durability":
        return "process", "power", "process"
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    if kind == "int":
        return 11, 12, 13
    if kind == "float":
        return 1.5, 2.5, 3.5
    if kind == "str":
        return "from-file", "from-env", "from-override"
    raise AssertionError(f"add sample values for setting {name} of type {kind}")


SETTING_NAMES = [name for name, _ in SETTINGS]


# -- the settings table ------------------------------------------------------------------------


def test_settings_table_lists_every_field_with_its_environment_variable() -> None:
    # regions is the one field set by tables of its own ([regions.NAME]), not a variable.
    assert [f.name for f in dataclasses.fields(Settings)] == [*SETTING_NAMES, "regions"]
    assert dict(SETTINGS) == {name: f"TETHER_{name.upper()}" for name in SETTING_NAMES}


def test_every_setting_has_a_docstring_in_the_settings_class() -> None:
    source = Path(tether.config.__file__).read_text(encoding="utf-8")
    for name in SETTING_NAMES:
        assert re.search(rf"^    {name}: .*\n    \"\"\"\S", source, re.MULTILINE), name


def test_readme_documents_every_setting_and_its_environment_variable() -> None:
    """Each setting has a row in the README's settings table naming it and its variable."""
    rows = [line for line in README.read_text(encoding="utf-8").splitlines()
            if line.startswith("|")]
    missing = [name for name, variable in SETTINGS
               if not any(f"`{name}`" in row and f"`{variable}`" in row for row in rows)]
    assert missing == []


# -- precedence --------------------------------------------------------------------------------


def test_without_file_environment_or_overrides_the_defaults_apply() -> None:
    assert load_settings(environ={}) == Settings()
    assert Settings().db == DEFAULT_DB


@pytest.mark.parametrize("name", SETTING_NAMES)
def test_each_layer_overrides_the_one_below(name: str, tmp_path: Path) -> None:
    from_file, from_env, from_override = samples(name)
    variable = dict(SETTINGS)[name]
    path = write_toml(tmp_path, f"[runtime]\n{name} = {toml_value(from_file)}\n", "custom.toml")
    default = getattr(Settings(), name)
    assert getattr(load_settings(environ={}), name) == default
    assert getattr(load_settings(path, environ={}), name) == from_file
    environ = {variable: str(from_env)}
    assert getattr(load_settings(path, environ=environ), name) == from_env
    assert getattr(load_settings(path, environ=environ, **{name: from_override}),
                   name) == from_override
    assert getattr(load_settings(path, environ=environ, **{name: None}), name) == from_env


def test_layers_merge_setting_by_setting(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[runtime]\nlease_seconds = 5\npoll_interval_seconds = 2\n"
                                'tenant = "acme"\n')
    settings = load_settings(path, environ={"TETHER_POLL_INTERVAL_SECONDS": "0.5",
                                            "TETHER_PRINCIPAL": "ops"},
                             tenant="globex", durability=None)
    assert settings == Settings(lease_seconds=5.0, poll_interval_seconds=0.5, tenant="globex",
                                principal="ops")


def test_tether_toml_in_the_working_directory_is_read_when_no_path_is_given(
        tmp_path: Path) -> None:
    write_toml(tmp_path, "[runtime]\nmax_concurrent_runs = 7\n")
    assert load_settings(environ={}).max_concurrent_runs == 7


def test_the_process_environment_is_read_when_none_is_given(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_LEASE_SECONDS", "12.5")
    assert load_settings().lease_seconds == 12.5


def test_other_tables_and_unrelated_variables_are_ignored(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[tools]\nanything = "goes"\n[runtime]\ntenant = "t"\n')
    settings = load_settings(path, environ={"TETHER_DEMO_DIR": "/x", "HOME": "/root"})
    assert settings == Settings(tenant="t")


def test_a_file_without_a_runtime_table_gives_the_defaults(tmp_path: Path) -> None:
    assert load_settings(write_toml(tmp_path, "# nothing yet\n"), environ={}) == Settings()


def test_numbers_from_the_environment_are_parsed() -> None:
    settings = load_settings(environ={"TETHER_FLUSH_MAX_RECORDS": "64",
                                      "TETHER_MEMORY_SLEEP_SECONDS": "0"})
    assert settings.flush_max_records == 64
    assert settings.memory_sleep_seconds == 0.0


def test_an_integer_in_the_file_is_accepted_for_a_seconds_setting(tmp_path: Path) -> None:
    settings = load_settings(write_toml(tmp_path, "[runtime]\nlease_seconds = 5\n"), environ={})
    assert settings.lease_seconds == 5.0


def test_replace_validates_the_new_values() -> None:
    assert Settings().replace(lease_seconds=3).lease_seconds == 3
    with pytest.raises(ConfigError, match="lease_seconds must be positive"):
        Settings().replace(lease_seconds=0)


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().lease_seconds = 1  # type: ignore[misc]


# -- errors ------------------------------------------------------------------------------------


def config_error(tmp_path: Path, toml: str | None = None, environ: dict[str, str] | None = None,
                 **overrides: object) -> str:
    path = write_toml(tmp_path, toml, "bad.toml") if toml is not None else None
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ or {}, **overrides)
    assert caught.value.code == "config"
    return caught.value.message


def test_an_unknown_key_names_the_file_the_key_and_the_known_keys(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[runtime]\nlease_secs = 5\n")
    assert message.startswith(f"{tmp_path / 'bad.toml'}: ")
    assert "runtime.lease_secs" in message
    for name in SETTING_NAMES:
        assert name in message


def test_a_string_for_a_number_names_the_file_key_and_type(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[runtime]\nlease_seconds = "soon"\n')
    assert str(tmp_path / "bad.toml") in message
    assert "runtime.lease_seconds" in message
    assert "must be a number" in message
    assert "'soon'" in message


def test_a_boolean_is_not_a_number(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[runtime]\nflush_max_records = true\n")
    assert "runtime.flush_max_records" in message
    assert "must be a whole number, not True" in message


def test_a_number_for_a_string_setting_names_the_file_and_key(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[runtime]\ntenant = 5\n")
    assert "runtime.tenant" in message
    assert "must be a string" in message


def test_a_fraction_for_a_whole_number_setting_is_refused(tmp_path: Path) -> None:
    """2.5 records cannot be silently read as 2."""
    message = config_error(tmp_path, "[runtime]\nflush_max_records = 2.5\n")
    assert "runtime.flush_max_records" in message
    assert "must be a whole number, not 2.5" in message


def test_a_bad_number_in_the_environment_names_the_variable(tmp_path: Path) -> None:
    message = config_error(tmp_path, environ={"TETHER_FLUSH_INTERVAL_MS": "fast"})
    assert message.startswith("TETHER_FLUSH_INTERVAL_MS: ")
    assert "flush_interval_ms must be a whole number, not 'fast'" in message


def test_a_bad_durability_in_the_file_names_the_file_and_the_allowed_values(
        tmp_path: Path) -> None:
    message = config_error(tmp_path, '[runtime]\ndurability = "disk"\n')
    assert str(tmp_path / "bad.toml") in message
    assert "durability" in message
    assert "'power'" in message
    assert "'process'" in message
    assert "'disk'" in message


def test_a_bad_durability_in_the_environment_names_the_variable(tmp_path: Path) -> None:
    message = config_error(tmp_path, environ={"TETHER_DURABILITY": "disk"})
    assert "TETHER_DURABILITY" in message
    assert "'power' or 'process'" in message


def test_a_bad_value_in_the_environment_is_not_blamed_on_the_file(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[runtime]\ntenant = "acme"\n',
                           environ={"TETHER_LEASE_SECONDS": "0"})
    assert "TETHER_LEASE_SECONDS" in message
    assert "bad.toml" not in message


NON_POSITIVE = [
    ("flush_interval_ms", 0, "at least 1"),
    ("flush_max_records", 0, "at least 1"),
    ("max_concurrent_runs", -3, "at least 1"),
    ("lease_seconds", 0, "positive"),
    ("poll_interval_seconds", -1, "positive"),
    ("memory_sleep_seconds", -1, "not be negative"),
]


@pytest.mark.parametrize(("name", "value", "allowed"), NON_POSITIVE,
                         ids=[n for n, _, _ in NON_POSITIVE])
def test_an_out_of_range_value_in_the_file_names_file_key_and_range(
        tmp_path: Path, name: str, value: int, allowed: str) -> None:
    message = config_error(tmp_path, f"[runtime]\n{name} = {value}\n")
    assert str(tmp_path / "bad.toml") in message
    assert name in message
    assert allowed in message


@pytest.mark.parametrize(("name", "value", "allowed"), NON_POSITIVE,
                         ids=[n for n, _, _ in NON_POSITIVE])
def test_an_out_of_range_value_in_the_environment_names_the_variable(
        tmp_path: Path, name: str, value: int, allowed: str) -> None:
    message = config_error(tmp_path, environ={f"TETHER_{name.upper()}": str(value)})
    assert f"TETHER_{name.upper()}" in message
    assert allowed in message


def test_an_out_of_range_override_names_the_setting(tmp_path: Path) -> None:
    message = config_error(tmp_path, lease_seconds=-2)
    assert "lease_seconds must be positive" in message


def test_a_db_url_of_an_unknown_kind_says_what_is_allowed(tmp_path: Path) -> None:
    message = config_error(tmp_path, environ={"TETHER_DB": "mysql://x"})
    assert "TETHER_DB" in message
    assert "sqlite:///PATH" in message
    assert "'mysql://x'" in message


def test_malformed_toml_names_the_file_and_where_it_broke(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[runtime]\nlease_seconds = = 5\n")
    assert message.startswith(f"{tmp_path / 'bad.toml'}: not valid TOML")
    assert "line 2" in message


def test_a_runtime_key_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, "runtime = 5\n")
    assert str(tmp_path / "bad.toml") in message
    assert "[runtime] must be a table" in message


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match="no such config file") as caught:
        load_settings(missing, environ={})
    assert str(missing) in caught.value.message


def test_an_unknown_override_is_refused(tmp_path: Path) -> None:
    assert "unknown setting 'colour'" in config_error(tmp_path, colour="blue")
