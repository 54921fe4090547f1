"""``[mcp.servers.NAME]`` in tether.toml and the same declarations in code: what is accepted,
and errors that name the file, the key and what is allowed (never a secret)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tether.errors import ConfigError, UsageError
from tether.mcp import HTTPServer, MCPServers, StdioServer, ToolOptions, default_launcher
from tether.mcp import load_mcp_servers as load

GOOD = """
[runtime]
durability = "process"

[mcp.servers.git]
transport = "stdio"
command = "mcp-server-git"
args = ["--repository", "."]
env = ["HOME"]
cwd = "/srv/git"
prefix = "git_"
side_effects = false
timeout = 5

[mcp.servers.git.tools.git_commit]
side_effects = true
idempotent = false
timeout = 20

[mcp.servers.notes]
transport = "http"
url = "http://127.0.0.1:9000/mcp"
headers = { Authorization = "NOTES_AUTH" }
region = "eu"
max_attempts = 3
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tether.toml"
    path.write_text(text)
    return path


def test_a_full_file_loads_both_transports_and_per_tool_settings(tmp_path: Path) -> None:
    servers = load(write(tmp_path, GOOD))
    git, notes = servers["git"], servers["notes"]
    assert isinstance(git, StdioServer)
    assert isinstance(notes, HTTPServer)
    assert git.args == ("--repository", ".")
    assert git.env == ("HOME",)
    assert git.cwd == "/srv/git"
    assert notes.headers == {"Authorization": "NOTES_AUTH"}
    assert notes.region == "eu"
    # A tool's own settings win; what it leaves unset comes from its server.
    assert git.options_for("git_commit") == ToolOptions(
        timeout=20, side_effects=True, idempotent=False, max_attempts=1)
    assert git.options_for("git_status") == ToolOptions(
        timeout=5, side_effects=False, idempotent=False, max_attempts=1)
    assert notes.options_for("anything") == ToolOptions(
        timeout=60, side_effects=True, idempotent=False, max_attempts=3, region="eu")


def test_tools_get_prefix_and_settings_from_config(tmp_path: Path) -> None:
    servers = MCPServers.from_config(write(tmp_path, GOOD))
    commit = servers.tool("git", "git_commit")
    status = servers.tool("git", "git_status")
    assert commit.name == "git_git_commit"
    assert commit.remote_name == "git_commit"
    assert (commit.side_effects, commit.idempotent, commit.timeout) == (True, False, 20)
    assert (status.side_effects, status.timeout) == (False, 5)
    notes = servers.tool("notes", "append")
    assert notes.retry.max_attempts == 3
    assert notes.region == "eu"
    assert servers.tool("git", "git_commit") is commit  # one object per tool


def test_defaults_are_side_effects_and_not_idempotent() -> None:
    tool = MCPServers([StdioServer(name="s", command="x")]).tool("s", "t")
    assert (tool.side_effects, tool.idempotent, tool.timeout) == (True, False, 60)
    assert tool.retry.max_attempts == 1


def test_no_file_and_no_mcp_table_mean_no_servers(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load() == {}
    assert load(write(tmp_path, "[runtime]\ndb = 'memory://'\n")) == {}


@pytest.mark.parametrize(("toml", "expected"), [
    ("[mcp.servers.a]\ncommand = 'x'\n",
     "tether.toml: mcp.servers.a.transport is missing; allowed: 'stdio', 'http'"),
    ("[mcp.servers.a]\ntransport = 'sse'\nurl = 'http://h/'\n",
     "mcp.servers.a.transport is 'sse'; allowed: 'stdio', 'http'"),
    ("[mcp.servers.a]\ntransport = 'stdio'\ncomand = 'x'\n",
     "mcp.servers.a.comand: unknown key; allowed: prefix, timeout, startup_timeout"),
    ("[mcp.servers.a]\ntransport = 'stdio'\n", "mcp.servers.a: command is required"),
    ("[mcp.servers.a]\ntransport = 'stdio'\ncommand = 'x'\ntimeout = 'soon'\n",
     "mcp.servers.a.timeout: Input should be a valid number"),
    ("[mcp.servers.a]\ntransport = 'stdio'\ncommand = 'x'\ntimeout = -1\n",
     "mcp.servers.a.timeout: Input should be greater than 0, not -1"),
    ("[mcp.servers.a]\ntransport = 'http'\nurl = 'ftp://h/'\n",
     "mcp.servers.a.url: must start with http:// or https://, not 'ftp://h/'"),
    ("[mcp.servers.a]\ntransport = 'stdio'\ncommand = 'x'\n[mcp.servers.a.tools.t]\nretries = 2\n",
     "mcp.servers.a.tools.t.retries: unknown key; allowed: timeout, side_effects, idempotent, "
     "max_attempts, region"),
    ("[mcp.servers.a]\ntransport = 'stdio'\ncommand = 'x'\nname = 'b'\n",
     "mcp.servers.a.name: unknown key; the table's name ('a') names the server"),
    ("[mcp]\nservers = 3\n", "mcp.servers must be tables like [mcp.servers.files]"),
    ("[mcp.server.a]\ntransport = 'stdio'\n", "[mcp] holds only server tables"),
    ("[mcp.servers\n", "not valid TOML"),
])
def test_a_config_error_names_the_file_the_key_and_what_is_allowed(
        tmp_path: Path, toml: str, expected: str) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(path) in caught.value.message
    assert expected in caught.value.message


@pytest.mark.parametrize("toml", [
    "[mcp.servers.a]\ntransport = 'http'\nurl = 'http://h/'\n"
    "headers = { Authorization = 'Bearer sk-live-123456' }\n",
    "[mcp.servers.a]\ntransport = 'stdio'\ncommand = 'x'\nenv = ['TOKEN=sk-live-123456']\n",
])
def test_a_secret_pasted_where_a_variable_name_belongs_is_refused_and_not_echoed(
        tmp_path: Path, toml: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, toml))
    assert "NAME of an environment variable" in caught.value.message
    assert "sk-live" not in caught.value.message


def test_the_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load(tmp_path / "nope.toml")


def test_declaring_a_server_in_code_validates_it_the_same_way() -> None:
    with pytest.raises(ConfigError) as caught:
        StdioServer(name="a", command="")
    assert caught.value.message.startswith("StdioServer(name='a').command:")
    with pytest.raises(ConfigError, match=r"HTTPServer\(name='b'\)\.timeot: unknown key"):
        HTTPServer(name="b", url="http://h/", timeot=3)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="name: String should match pattern"):
        StdioServer(name="has space", command="x")


def test_server_names_are_unique_and_must_exist() -> None:
    with pytest.raises(ConfigError, match="two MCP servers are named 'a'"):
        MCPServers([StdioServer(name="a", command="x"), StdioServer(name="a", command="y")])
    with pytest.raises(ConfigError, match="no MCP server named 'b'; servers: a"):
        MCPServers([StdioServer(name="a", command="x")]).tool("b", "t")


def test_the_schema_of_a_tool_is_unknown_until_its_server_has_started() -> None:
    tool = MCPServers([StdioServer(name="a", command="x")]).tool("a", "t")
    with pytest.raises(UsageError, match=r"await servers.start\(\)"):
        _ = tool.spec


def test_the_default_launcher_passes_only_allowed_variables_and_finds_the_command() -> None:
    server = StdioServer(name="a", command="python3", args=("-V",), env=("KEEP", "UNSET"),
                         cwd="/srv")
    environ = {"PATH": str(Path(sys.executable).parent), "KEEP": "1", "SECRET": "s3cret"}
    launch = default_launcher(server, environ)
    assert launch.argv == (str(Path(sys.executable).parent / "python3"), "-V")
    assert launch.env == {"KEEP": "1"}  # not PATH, not SECRET; UNSET is left out
    assert launch.cwd == "/srv"
    assert "s3cret" not in repr(launch)


def test_a_command_not_on_path_is_a_config_error() -> None:
    server = StdioServer(name="a", command="no-such-mcp-server-here")
    with pytest.raises(ConfigError, match="'no-such-mcp-server-here' is not on PATH"):
        default_launcher(server, {"PATH": "/nonexistent"})
