"""Profiles from tether.toml, fail-closed refusals, and the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tether.errors import ConfigError, SandboxUnavailable
from tether.sandbox import DEFAULT_PROFILE, load_sandbox_config, probe

TETHER = [sys.executable, "-m", "tether"]


def test_default_profile_is_strict() -> None:
    assert DEFAULT_PROFILE.network == "none"
    assert DEFAULT_PROFILE.env == ()
    assert (DEFAULT_PROFILE.cpu_seconds, DEFAULT_PROFILE.wall_seconds) == (30, 60)
    assert DEFAULT_PROFILE.memory_bytes == 512 * 1024**2
    assert DEFAULT_PROFILE.processes == 64
    assert DEFAULT_PROFILE.file_size_bytes == 64 * 1024**2


def test_profiles_start_from_default(tmp_path: Path) -> None:
    config = tmp_path / "tether.toml"
    config.write_text('[sandbox.profiles.build]\nmemory_bytes = "2GiB"\ncpu_seconds = 120\n')
    build = load_sandbox_config(config).profile("build")
    assert build.memory_bytes == 2 * 1024**3
    assert build.cpu_seconds == 120
    assert build.processes == 64


@pytest.mark.parametrize(("body", "message"), [
    ("[sandbox.profiles.x]\nmemory_bytes = \"lots\"\n", "sandbox.profiles.x: memory_bytes"),
    ("[sandbox.profiles.x]\nwritable = [\"relative\"]\n", "paths must be absolute"),
    ("[sandbox.profiles.x]\nnetwerk = \"none\"\n", "netwerk"),
    ("[sandbox.profiles.x]\nenv = [\"A-B\"]\n", "not an environment variable name"),
])
def test_bad_profiles_are_refused_with_the_key(tmp_path: Path, body: str, message: str) -> None:
    config = tmp_path / "tether.toml"
    config.write_text(body)
    with pytest.raises(ConfigError, match=message):
        load_sandbox_config(config)


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="known profiles: default"):
        load_sandbox_config(None).profile("nope")


def test_a_profile_needing_a_missing_layer_fails_closed() -> None:
    layers = probe()
    fields = {f: getattr(layers, f) for f in layers.__slots__}
    no_landlock = type(layers)(**{**fields, "landlock_abi": 0})
    wants_landlock = DEFAULT_PROFILE.model_copy(update={"landlock": "required"})
    with pytest.raises(SandboxUnavailable, match="no Landlock"):
        no_landlock.require(wants_landlock)
    no_bwrap = type(layers)(**{**fields, "bwrap": None})
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        no_bwrap.require(DEFAULT_PROFILE)


def test_cli_runs_a_command_and_exits_with_its_status(sandbox: object, tmp_path: Path) -> None:
    done = subprocess.run([*TETHER, "sandbox", "run", "--", "sh", "-c", "echo hi; exit 3"],
                          capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (3, "hi\n")
    done = subprocess.run([*TETHER, "sandbox", "run", "--timeout", "0.5", "--", "sleep", "9"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 124
    assert "killed after" in done.stderr
    done = subprocess.run([*TETHER, "sandbox", "run", "--profile", "nope", "--", "true"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "no sandbox profile 'nope'" in done.stderr


def test_doctor_lists_layers_and_profiles(sandbox: object) -> None:
    done = subprocess.run([*TETHER, "doctor"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    for layer in ("bubblewrap", "seccomp", "landlock", "cgroup", "network", "python", "wasm"):
        assert layer in done.stdout
    assert "default      enforceable" in done.stdout
