"""Escape-battery row: the runtime's own directories stay out of sandboxes. A project keeps its
``.env``, ``tether.toml`` and SQLite file next to its script or in its working directory, and
both are on the runtime's ``sys.path`` (the script's directory first, the working directory
under ``python -m`` or on ``PYTHONPATH``); agent-written code must read none of them, while a
sandboxed tool of the project's own still imports and runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.sandbox import Sandbox

pytestmark = pytest.mark.escape

_TOOLS = '''
import errno
import os

import tether


@tether.tool(sandbox="default")
def peek(paths: list[str]) -> dict[str, object]:
    """Try to read each file or list each directory; a project tool, run in the sandbox."""
    seen: dict[str, object] = {}
    for path in paths:
        try:
            if os.path.isdir(path):
                seen[path] = sorted(os.listdir(path))
            else:
                with open(path) as f:
                    seen[path] = f.read()
        except OSError as exc:
            seen[path] = errno.errorcode[exc.errno]
    return seen
'''

_APP = '''
import json
import sys

import anyio

from tether.sandbox import Sandbox
from project import tools  # a runtime imports its tools' modules

PYTHON = """
import errno, json, os, sys
seen = {}
for path in sys.argv[1:]:
    try:
        seen[path] = open(path).read() if os.path.isfile(path) else sorted(os.listdir(path))
    except OSError as exc:
        seen[path] = errno.errorcode[exc.errno]
print(json.dumps(seen))
"""


async def main(paths: list[str]) -> None:
    quoted = " ".join(f"'{p}'" for p in paths)
    async with Sandbox() as sandbox:
        python = await sandbox.call("tether.tools._builtin", "python_exec", {
            "code": f"import sys; sys.argv[1:] = {paths!r}\\n" + PYTHON})
        shell = await sandbox.call("tether.tools._builtin", "shell_exec",
                                   {"command": f"cat {quoted}; ls {quoted}"})
        tool = await sandbox.call(tools.__name__, "peek", {"paths": paths})
    print(json.dumps({name: {"ok": outcome.ok, "result": outcome.result,
                             "message": outcome.message}
                      for name, outcome in (("python", python), ("shell", shell),
                                            ("tool", tool))}))


anyio.run(main, sys.argv[1:])
'''


@pytest.fixture
def project() -> Iterator[tuple[Path, Path]]:
    """A project directory (script, tools package, ``.env``) and a working directory
    (``tether.toml``, a 0644 ``tether.db``), both readable by everyone, as they often are."""
    made = []
    for prefix in ("tether-test-project-", "tether-test-cwd-"):
        path = Path(tempfile.mkdtemp(prefix=prefix))
        os.chmod(path, 0o755)  # noqa: S103
        made.append(path)
    app, cwd = made
    (app / "project").mkdir(mode=0o755)
    (app / "project" / "__init__.py").write_text("")
    (app / "project" / "tools.py").write_text(_TOOLS)
    (app / "app.py").write_text(_APP)
    (app / ".env").write_text(f"OPENAI_API_KEY=sk-script-dir-{os.getpid()}\n")
    (cwd / "tether.toml").write_text(f'[models]\napi_key = "sk-cwd-{os.getpid()}"\n')
    (cwd / "tether.db").write_text(f"every tenant's journal {os.getpid()}")
    for path in [*app.rglob("*"), *cwd.iterdir()]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    try:
        yield app, cwd
    finally:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("how", ["script", "module"])
def test_the_runtimes_script_and_working_directories_are_not_readable(
        sandbox: Sandbox, project: tuple[Path, Path], how: str) -> None:
    app, cwd = project
    if how == "script":  # python /srv/app/app.py, from another directory on PYTHONPATH
        argv, workdir = [str(app / "app.py")], cwd
    else:  # python -m app, from the project directory: the working directory is sys.path[0]
        argv, workdir = ["-m", "app"], app
    secrets = [app / ".env", cwd / "tether.toml", cwd / "tether.db"]
    paths = [str(p) for p in [*secrets, app, cwd]]
    done = subprocess.run([sys.executable, *argv, *paths], cwd=workdir, capture_output=True,
                          text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(cwd)})
    assert done.returncode == 0, done.stderr
    for secret in secrets:
        assert secret.read_text().strip() not in done.stdout + done.stderr
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["tool"]["ok"], got["tool"]["message"]  # the project's tool imports and runs
    assert got["python"]["ok"]
    assert got["shell"]["ok"]
    # Agent-written code sees nothing of the project or the working directory.
    assert json.loads(got["python"]["result"]["stdout"]) == dict.fromkeys(paths, "ENOENT")
    assert got["shell"]["result"]["stdout"] == ""
    assert got["shell"]["result"]["stderr"].count("No such file") == 2 * len(paths)
    # The project's tool sees its own package, and nothing else of the project.
    assert got["tool"]["result"] == {**dict.fromkeys(paths, "ENOENT"), str(app): ["project"]}


@pytest.fixture
def site_packages() -> Iterator[Path]:
    """A site-packages directory: one installed distribution, and a stray secret beside it."""
    site = Path(tempfile.mkdtemp(prefix="tether-test-site-"))
    try:
        (site / "fakepkg").mkdir()
        (site / "fakepkg" / "__init__.py").write_text("ANSWER = 42\n")
        info = site / "fakepkg-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.0\n")
        (info / "RECORD").write_text("fakepkg/__init__.py,,\nfakepkg-1.0.dist-info/METADATA,,\n"
                                     "fakepkg-1.0.dist-info/RECORD,,\n")
        (site / "secrets.env").write_text(f"TOKEN=stray-{os.getpid()}\n")
        for path in [site, *site.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        yield site
    finally:
        shutil.rmtree(site, ignore_errors=True)


@pytest.mark.anyio
async def test_a_site_packages_directory_with_stray_files_is_mounted_by_entry(
        sandbox: Sandbox, site_packages: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Last on the path, as site-packages are (sys.path[0] is never taken for one).
    monkeypatch.setattr(sys, "path", [*sys.path, str(site_packages)])
    code = f"""
import json, os
site = {str(site_packages)!r}
def read(name):
    try:
        return open(os.path.join(site, name)).read()
    except OSError as exc:
        return exc.strerror
print(json.dumps({{"listing": sorted(os.listdir(site)), "package": read("fakepkg/__init__.py"),
                  "stray": read("secrets.env")}}))"""
    outcome = await sandbox.call("tether.tools._builtin", "python_exec", {"code": code})
    assert outcome.ok, outcome.message
    assert isinstance(outcome.result, dict)
    got = json.loads(str(outcome.result["stdout"]))
    # What the distribution installed is there; what lies beside it is not.
    assert got == {"listing": ["fakepkg", "fakepkg-1.0.dist-info"],
                   "package": "ANSWER = 42\n", "stray": "No such file or directory"}
