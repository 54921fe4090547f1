"""MCP stdio servers launched in a sandbox profile: the reference server works there, and a
server that tries to get out (``probe_mcp_server.py``) cannot read the host's files or reach
its network.

The reference server is ``mcp-server-everything`` on node: node lives in ``/usr``, which every
sandbox mounts, so only its package directory needs mounting. (``mcp-server-time`` is a
console script of the runtime's virtualenv, whose interpreter may sit where a sandbox's uid
cannot read it; the tests would then depend on where the checkout's Python was installed.)
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from peers import node_bin
from tether.errors import ConfigError
from tether.mcp import MCPServers, StdioServer, default_launcher, load_mcp_servers
from tether.sandbox import Sandbox, check_unprivileged, sandbox_config
from tether.sandbox._launch import _tree

pytestmark = pytest.mark.anyio

HERE = Path(__file__).resolve().parent
PROBE = HERE / "probe_mcp_server.py"


def mcp_sandbox(**profile: object) -> Sandbox:
    everything = node_bin("mcp-server-everything")
    packages = str(Path(os.path.realpath(everything)).parents[3])  # node_modules
    return Sandbox(sandbox_config({"profiles": {"mcp": {
        "read_only": [packages, str(HERE)], "wall_seconds": 5, **profile}}}))


def everything() -> StdioServer:
    return StdioServer(name="everything", command=str(node_bin("mcp-server-everything")),
                       args=("stdio",), env=("PATH",), sandbox="mcp")


def probe() -> StdioServer:
    return StdioServer(name="probe", command="python3", args=(str(PROBE),), sandbox="mcp")


@pytest.fixture
async def servers(sandbox: Sandbox, no_leftover_processes: None,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MCPServers]:
    monkeypatch.setenv("SECRET_TOKEN", "s3cr3t")
    async with MCPServers([everything(), probe()], sandbox=mcp_sandbox()) as started:
        yield started


async def text(servers: MCPServers, server: str, tool: str, args: dict[str, object]) -> str:
    result = await servers.connection(server).call(tool, tool, args, None)
    return "".join(getattr(block, "text", "") for block in result.content)


async def test_the_reference_server_runs_unprivileged_without_secrets(
        servers: MCPServers) -> None:
    assert await text(servers, "everything", "echo", {"message": "hi"}) == "Echo: hi"
    env = await text(servers, "everything", "get-env", {})
    assert "SECRET_TOKEN" not in env
    assert "s3cr3t" not in env
    assert '"HOME": "/workspace"' in env
    pid = servers.connection("everything").pid
    assert pid is not None
    tree = _tree(pid)
    assert len(tree) >= 3  # bubblewrap, its init, node
    for process in tree:  # seen from the host: no root, no capabilities
        check_unprivileged(process)
    node = Path(f"/proc/{tree[-1]}/status").read_text()
    assert os.geteuid() != 0 or int(node.split("Uid:")[1].split()[0]) > 0


async def test_a_sandboxed_server_cannot_reach_the_network(
        servers: MCPServers, loopback_listeners: dict[str, object]) -> None:
    port = loopback_listeners["tcp_port"]
    fetched = await text(servers, "everything", "gzip-file-as-resource",
                         {"name": "x.gz", "data": f"http://127.0.0.1:{port}/"})
    assert "fetch failed" in fetched.lower() or "error" in fetched.lower()
    assert await text(servers, "probe", "connect",
                      {"host": "127.0.0.1", "port": port}) == "EACCES"


async def test_a_sandboxed_server_cannot_read_host_files(servers: MCPServers,
                                                         workspace: Path) -> None:
    secret = workspace / "secret.txt"
    secret.write_text("s3cr3t")
    # Readable by everyone on the host: only the sandbox's mount namespace keeps it out.
    os.chmod(workspace, 0o755)  # noqa: S103
    os.chmod(secret, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    for path in (str(secret), "/etc/shadow", "/root/.bashrc"):
        assert await text(servers, "probe", "read_file", {"path": path}) == "ENOENT"
    assert (await text(servers, "probe", "read_file", {"path": "/etc/passwd"})
            ).startswith("read: sandbox:x:1000")


async def test_a_sandboxed_server_dies_with_its_session(sandbox: Sandbox,
                                                        no_leftover_processes: None) -> None:
    async with MCPServers([probe()], sandbox=mcp_sandbox()) as started:
        pid = started.connection("probe").pid
        assert pid is not None
        inside = _tree(pid)
    await anyio.sleep(0.05)
    for process in inside:
        status = Path(f"/proc/{process}/status")
        assert not status.exists() or "State:\tZ" in status.read_text()


async def test_a_sandboxed_server_never_runs_unsandboxed() -> None:
    with pytest.raises(ConfigError, match="no sandbox was given"):
        default_launcher(probe(), os.environ)


def test_env_must_be_let_in_by_the_profile_too(sandbox: Sandbox) -> None:
    server = probe().model_copy(update={"env": ("API_TOKEN", "PATH")})
    with pytest.raises(ConfigError, match=r"API_TOKEN must also be in the profile's env"):
        MCPServers([server], sandbox=mcp_sandbox())
    MCPServers([server], sandbox=mcp_sandbox(env=["API_TOKEN"]))  # PATH is the sandbox's own
    with pytest.raises(ConfigError, match="cwd cannot be set"):
        MCPServers([probe().model_copy(update={"cwd": "/srv"})], sandbox=mcp_sandbox())


def test_sandbox_is_a_key_of_stdio_servers_in_tether_toml(tmp_path: Path) -> None:
    config = tmp_path / "tether.toml"
    config.write_text(f'[mcp.servers.probe]\ntransport = "stdio"\ncommand = "python3"\n'
                      f'args = ["{PROBE}"]\nsandbox = "mcp"\n\n'
                      '[sandbox.profiles.mcp]\nread_only = ["/opt"]\n')
    server = load_mcp_servers(config)["probe"]
    assert isinstance(server, StdioServer)
    assert server.sandbox == "mcp"
    assert MCPServers.from_config(config).names == ["probe"]  # the file's profile is found
    config.write_text('[mcp.servers.probe]\ntransport = "stdio"\ncommand = "x"\n'
                      'sandbox = "nope"\n')
    with pytest.raises(ConfigError, match="no sandbox profile 'nope'"):
        MCPServers.from_config(config)
