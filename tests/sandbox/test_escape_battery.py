"""The escape battery: each test tries one way out of the default profile and asserts the
specific denial (errno or signal) and that the host is unchanged. Run as root, as CI is."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import anyio
import pytest

from tether.errors import SandboxError, SandboxUnsafe
from tether.sandbox import Sandbox, check_unprivileged, read_beneath
from tether.sandbox._launch import LaunchSpec, SandboxProcess, _tree

from .sandbox_support import profile, report, run_python

pytestmark = [pytest.mark.anyio, pytest.mark.escape]


async def test_writes_outside_the_workspace_are_refused(sandbox: Sandbox) -> None:
    targets = ["/etc/pwned", "/var/tmp/pwned-by-sandbox", "/usr/lib/pwned", "/pwned"]  # noqa: S108
    result = await run_python(sandbox, f"""
out = {{p: attempt(lambda p: open(p, "w").write("x"), p) for p in {targets!r}}}
out["workspace"] = attempt(lambda: open("/workspace/ok", "w").write("x"))
print(json.dumps(out))""")
    got = report(result)
    assert got.pop("workspace") == "ok"
    assert got == {"/etc/pwned": "EACCES", "/var/tmp/pwned-by-sandbox": "ENOENT",  # noqa: S108
                   "/usr/lib/pwned": "EROFS", "/pwned": "EACCES"}
    for path in targets:
        assert not Path(path).exists()


async def test_secrets_of_the_host_are_not_readable(sandbox: Sandbox,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "s3cr3t")
    result = await run_python(sandbox, """
print(json.dumps({"shadow": attempt(open, "/etc/shadow"), "root": attempt(os.listdir, "/root"),
                  "ssh": attempt(open, "/root/.ssh/id_rsa"),
                  "env": sorted(os.environ), "init_env": attempt(open, "/proc/1/environ")}))""")
    got = report(result)
    assert got["shadow"] == got["root"] == got["ssh"] == "ENOENT"
    assert "SECRET_TOKEN" not in got["env"]
    assert got["env"] == ["HOME", "LANG", "PATH", "PWD", "TMPDIR", "USER"]
    assert b"s3cr3t" not in result.stdout + result.stderr


async def test_no_network_tcp_udp_or_dns(sandbox: Sandbox,
                                         loopback_listeners: dict[str, object]) -> None:
    tcp, udp = loopback_listeners["tcp_port"], loopback_listeners["udp_port"]
    result = await run_python(sandbox, f"""
import socket
def tcp(): socket.create_connection(("127.0.0.1", {tcp}), timeout=1)
def udp(): socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", {udp}))
def dns(): socket.getaddrinfo("example.com", 80)
def raw(): socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
def v6(): socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
print(json.dumps({{"tcp": attempt(tcp), "udp": attempt(udp), "dns": attempt(dns),
                  "netlink": attempt(raw), "v6": attempt(v6)}}))""")
    got = report(result)
    assert got["tcp"] == got["udp"] == got["netlink"] == got["v6"] == "EACCES"
    assert got["dns"] != "ok"


async def test_host_unix_sockets_are_unreachable(sandbox: Sandbox, tmp_path: Path) -> None:
    path = tmp_path / "host.sock"
    pathname = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pathname.bind(str(path))
    pathname.listen()
    # Open to everyone: only the mount namespace may keep the sandbox out.
    os.chmod(tmp_path, 0o755)  # noqa: S103
    os.chmod(path, 0o777)  # noqa: S103
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract_name = f"\0tether-test-{os.getpid()}"
    abstract.bind(abstract_name)
    abstract.listen()
    try:
        result = await run_python(sandbox, f"""
import socket
def connect(address): socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect(address)
print(json.dumps({{"pathname": attempt(connect, {str(path)!r}),
                  "abstract": attempt(connect, {abstract_name!r})}}))""")
        # The host has no such path in the sandbox; abstract names live in the network namespace.
        assert report(result) == {"pathname": "ENOENT", "abstract": "ECONNREFUSED"}
        for listener in (pathname, abstract):
            listener.settimeout(0.1)
            with pytest.raises(TimeoutError):
                listener.accept()
    finally:
        pathname.close()
        abstract.close()


async def test_fork_bomb_stops_at_the_process_cap(sandbox: Sandbox,
                                                  no_leftover_processes: None) -> None:
    result = await run_python(sandbox, """
import time
children, error = 0, None
while children < 1000:
    try:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        children += 1
    except OSError as exc:
        error = errno.errorcode[exc.errno]
        break
print(json.dumps({"children": children, "error": error}), flush=True)
os._exit(0)""", processes=16, wall_seconds=10)
    got = report(result)
    assert got["error"] == "EAGAIN"
    assert 0 < got["children"] < 16


async def test_memory_bomb_is_killed(sandbox: Sandbox) -> None:
    result = await run_python(sandbox, """
hog = []
while True:
    hog.append(bytearray(16 * 1024 * 1024))
""", memory_bytes=128 * 1024**2)
    if sandbox.layers.cgroup is not None:
        assert result.signal == signal.SIGKILL  # the memory cgroup's OOM killer
    else:
        assert b"MemoryError" in result.stderr  # RLIMIT_AS
    assert not result.timed_out


async def test_cpu_loop_is_killed_at_the_cpu_limit(sandbox: Sandbox) -> None:
    result = await run_python(sandbox, "while True: pass", cpu_seconds=1)
    assert result.signal == signal.SIGKILL
    assert not result.timed_out
    assert result.duration_seconds < 10


async def test_sleeping_past_the_wall_limit_is_killed(sandbox: Sandbox,
                                                      no_leftover_processes: None) -> None:
    result = await run_python(sandbox, "import time; time.sleep(1000)", wall_seconds=1)
    assert result.timed_out
    assert result.shell_status() == 124


async def test_disk_bomb_stops_at_the_file_size_limit(sandbox: Sandbox, workspace: Path) -> None:
    result = await run_python(sandbox, """
def fill():
    with open("/workspace/big", "wb") as f:
        for _ in range(200):
            f.write(b"x" * 1024 * 1024)
print(json.dumps({"write": attempt(fill)}))""", workspace=workspace,
                              file_size_bytes=8 * 1024**2)
    assert report(result) == {"write": "EFBIG"}
    assert (workspace / "big").stat().st_size == 8 * 1024**2


async def test_killing_the_parent_or_the_runtime_fails(sandbox: Sandbox) -> None:
    result = await run_python(sandbox, f"""
import signal
print(json.dumps({{"parent": attempt(os.kill, os.getppid(), signal.SIGKILL),
                  "runtime": attempt(os.kill, {os.getpid()}, signal.SIGKILL),
                  "init": attempt(os.kill, 1, signal.SIGKILL)}}))""")
    got = report(result)
    assert got["parent"] == got["init"] == "EPERM"  # Landlock signal scoping
    assert got["runtime"] in ("ESRCH", "EPERM")  # not in the sandbox's pid namespace
    assert result.exit_code == 0  # and we are still here


async def test_ptrace_kills_the_payload(sandbox: Sandbox) -> None:
    result = await run_python(sandbox, """
import ctypes
ctypes.CDLL(None).ptrace(16, os.getppid(), 0, 0)  # PTRACE_ATTACH
print("survived")""")
    assert result.signal == signal.SIGSYS
    assert b"survived" not in result.stdout


@pytest.mark.parametrize("call", [
    "libc.unshare(0x10000000)",  # CLONE_NEWUSER
    "libc.mount(b'none', b'/', None, 0x20 | 0x1000, None)",  # MS_REMOUNT|MS_BIND
    "libc.setns(0, 0)",
])
async def test_nested_namespaces_and_remounts_kill_the_payload(sandbox: Sandbox,
                                                               call: str) -> None:
    result = await run_python(sandbox, f"""
import ctypes
libc = ctypes.CDLL(None)
{call}
print("survived")""")
    assert result.signal == signal.SIGSYS
    assert b"survived" not in result.stdout


async def test_cloning_into_new_namespaces_is_refused(sandbox: Sandbox) -> None:
    result = await run_python(sandbox, """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
rc = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)  # clone(CLONE_NEWUSER|SIGCHLD)
print(json.dumps({"rc": rc, "errno": errno.errorcode[ctypes.get_errno()]}))""")
    assert report(result) == {"rc": -1, "errno": "EPERM"}


async def test_the_payload_is_never_host_root(sandbox: Sandbox) -> None:
    """The root-mapping regression: bubblewrap started by root maps the payload to host root
    unless the uid is dropped first. Checked from the host while the payload runs."""
    spec = LaunchSpec(sandbox.profile("default"), "exec",
                      ("sh", "-c", "touch /etc/x; mount -o remount,rw /; sleep 30"))
    process = SandboxProcess(spec, sandbox.layers, sandbox._uids)
    try:
        await process.start()
        async with anyio.create_task_group() as group:
            group.start_soon(process.run)
            await anyio.sleep(0.3)
            assert process.pid is not None
            pids = _tree(process.pid)
            assert len(pids) >= 3
            for pid in pids:
                status = Path(f"/proc/{pid}/status").read_text()
                uids = status.split("Uid:")[1].split("\n")[0].split()
                assert "0" not in uids
                assert int(status.split("CapEff:")[1].split()[0], 16) == 0
                check_unprivileged(pid)
            process.kill()
    finally:
        await process.aclose()
    assert not Path("/etc/x").exists()
    if os.geteuid() == 0:
        with pytest.raises(SandboxUnsafe):
            check_unprivileged(os.getpid())  # and the check itself refuses root


async def test_children_inherit_every_limit(sandbox: Sandbox) -> None:
    result = await run_python(sandbox, """
import subprocess
child = subprocess.run(["sh", "-c", "id -u; ulimit -f; ulimit -n; ulimit -t; cat /etc/shadow"],
                       capture_output=True, text=True)
print(json.dumps({"out": child.stdout.split(), "err": child.stderr}))""",
                              file_size_bytes=1024**2, open_files=64, cpu_seconds=7)
    got = report(result)
    assert got["out"] == ["1000", "2048", "64", "7"]  # sh counts file size in 512-byte blocks
    assert "No such file" in got["err"]


async def test_typing_into_the_terminal_is_refused(sandbox: Sandbox) -> None:
    result = await run_python(sandbox, """
import ctypes, fcntl, termios
libc = ctypes.CDLL(None, use_errno=True)
def sti(request):
    if libc.syscall(16, 0, ctypes.c_ulong(request), ctypes.c_char_p(b"x")) < 0:
        raise OSError(ctypes.get_errno(), "ioctl")
print(json.dumps({"tiocsti": attempt(sti, termios.TIOCSTI),
                  "high_bits": attempt(sti, termios.TIOCSTI | (1 << 32)),
                  "other": attempt(sti, termios.TCGETS)}))""")
    assert report(result) == {"tiocsti": "EPERM", "high_bits": "EPERM", "other": "ENOTTY"}


async def test_proc_and_sys_show_nothing_of_the_host(sandbox: Sandbox) -> None:
    result = await run_python(sandbox, """
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
def write_sysctl(): open("/proc/sys/kernel/hostname", "w").write("pwned")
print(json.dumps({"pids": pids, "sys": attempt(os.listdir, "/sys"),
                  "cgroup": attempt(os.listdir, "/sys/fs/cgroup"),
                  "sysctl": attempt(write_sysctl), "hostname": os.uname().nodename}))""")
    got = report(result)
    assert got["pids"] == [1, 2]
    assert got["sys"] == got["cgroup"] == "ENOENT"
    assert got["sysctl"] in ("EROFS", "EACCES")
    assert got["hostname"] == "sandbox"
    assert socket.gethostname() != "pwned"


async def test_runtime_never_follows_links_out_of_the_workspace(sandbox: Sandbox,
                                                                workspace: Path) -> None:
    result = await run_python(sandbox, """
os.symlink("/etc/shadow", "/workspace/report.txt")
os.mkdir("/workspace/sub")
os.symlink("/etc", "/workspace/link")
open("/workspace/sub/fine.txt", "w").write("fine")
print(json.dumps({}))""", workspace=workspace)
    report(result)
    assert read_beneath(workspace, "sub/fine.txt") == b"fine"
    for name in ("report.txt", "link/shadow", "../etc/shadow", "/etc/shadow"):
        with pytest.raises(SandboxError):
            read_beneath(workspace, name)


async def test_inherited_file_descriptors_are_closed(sandbox: Sandbox, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t")
    fd = os.open(secret, os.O_RDONLY)
    os.set_inheritable(fd, True)
    try:
        result = await run_python(sandbox, """
readable = [n for n in range(3, 256) if attempt(os.read, n, 10) != "EBADF"]
print(json.dumps({"readable": readable, "open": sorted(os.listdir("/proc/self/fd"))}))""")
    finally:
        os.close(fd)
    got = report(result)
    assert got["readable"] == []
    assert b"s3cr3t" not in result.stdout


async def test_a_stopped_payload_is_killed_at_the_wall_limit(
        sandbox: Sandbox, no_leftover_processes: None) -> None:
    result = await run_python(sandbox, "import signal; os.kill(os.getpid(), signal.SIGSTOP)",
                              wall_seconds=1)
    assert result.timed_out


async def test_a_privileged_sandbox_is_refused_before_it_runs(
        sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """If the uid drop were ever lost (here: forced off), the host-side check refuses."""
    if os.geteuid() != 0:
        pytest.skip("only a root runtime can start a root sandbox")
    marker = tmp_path / "ran"
    monkeypatch.setattr(type(sandbox._uids), "take", lambda self: 0)
    monkeypatch.setattr(type(sandbox._uids), "give_back", lambda self, uid: None)
    with pytest.raises(SandboxUnsafe):
        await sandbox.run(["touch", str(marker)], profile="default")
    assert not marker.exists()



async def test_profile_env_values_never_reach_a_command_line(sandbox: Sandbox) -> None:
    """Every local user can read every process's /proc/PID/cmdline; a profile's environment
    values (API keys, say) must not be there while the sandbox runs, yet reach the payload."""
    secret = f"tether-profile-value-{os.getpid()}-{id(sandbox)}"
    spec = LaunchSpec(profile(env=("TETHER_TEST_PROFILE_VALUE",)), "exec",
                      ("sh", "-c", 'printf %s "$TETHER_TEST_PROFILE_VALUE"'),
                      environ={"TETHER_TEST_PROFILE_VALUE": secret})
    process = SandboxProcess(spec, sandbox.layers, sandbox._uids)
    try:
        await process.start()
        assert process.pid is not None
        running = _tree(process.pid)
        assert len(running) >= 3  # bubblewrap, its init and the sandbox's first program
        on_command_lines = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                except OSError:
                    continue
                if secret.encode() in cmdline:
                    on_command_lines.append(entry)
        result, _ = await process.run()
    finally:
        await process.aclose()
    assert on_command_lines == []
    assert result.stdout == secret.encode()
