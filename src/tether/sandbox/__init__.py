"""The sandbox: untrusted commands and tool functions run with less privilege than the runtime.

Layout: ``_profile.py`` (profiles and the ``[sandbox]`` config), ``_probe.py`` (what this
machine offers; fail closed), ``_launch.py`` (the process backend: uid, bubblewrap, checks,
limits, teardown), ``_uids.py`` (a uid per live sandbox, machine-wide), ``_cgroup.py``,
``_seccomp.py``, ``_hosts.py`` and ``_proxy.py`` (the network allow-list and its host-side
CONNECT proxy), ``_files.py`` (workspaces, never following links), ``_sweep.py`` (what a killed
runtime left behind), ``_python.py`` (which interpreter runs inside), ``_imports.py`` (what a
worker may import), ``_inside.py`` (the first program inside every sandbox), ``_service.py``
(``Sandbox``: commands, servers, function calls, run workspaces and warm pools). This package
is the only code that starts processes.
"""

from tether.sandbox._files import read_beneath
from tether.sandbox._launch import (
    PROXY_PORT,
    SANDBOX_ENV,
    WORKSPACE,
    SandboxResult,
    check_unprivileged,
)
from tether.sandbox._probe import Layers, probe
from tether.sandbox._profile import (
    DEFAULT_PROFILE,
    Profile,
    SandboxConfig,
    load_sandbox_config,
    sandbox_config,
)
from tether.sandbox._service import CallOutcome, Sandbox

__all__ = [
    "CallOutcome", "DEFAULT_PROFILE", "PROXY_PORT", "SANDBOX_ENV", "Layers", "Profile",
    "Sandbox", "SandboxConfig", "SandboxResult", "WORKSPACE", "check_unprivileged",
    "load_sandbox_config", "probe", "read_beneath", "sandbox_config",
]
