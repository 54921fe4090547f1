"""What this machine offers the sandbox, and whether a profile can be enforced here.

Every layer is probed, never assumed, and a profile that needs a missing layer is refused
(fail closed) with what to install: a sandbox never runs with less isolation than its profile
promises.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from dataclasses import dataclass

from tether.errors import SandboxError, SandboxUnavailable
from tether.sandbox._cgroup import CgroupSupport, find_cgroup_support
from tether.sandbox._profile import Profile
from tether.sandbox._python import SandboxPython, find_sandbox_python

_LANDLOCK_CREATE_RULESET = 444  # the same number on x86_64 and the generic table (arm64)
_LANDLOCK_CREATE_RULESET_VERSION = 1


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: not available)."""
    libc = ctypes.CDLL(None, use_errno=True)
    version = libc.syscall(_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                           ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def _seccomp_available() -> str | None:
    """None when seccomp filters can be built and loaded here, else why not."""
    try:
        with open("/proc/self/status", encoding="utf-8") as status:
            if "Seccomp:" not in status.read():
                return "the kernel has no seccomp (CONFIG_SECCOMP_FILTER)"
        from tether.sandbox._seccomp import seccomp_programs

        seccomp_programs()
    except ImportError:
        return "pyseccomp is not installed (pip install pyseccomp; it needs libseccomp2)"
    except OSError as exc:
        return f"libseccomp failed: {exc} (apt-get install libseccomp2)"
    return None


@dataclass(frozen=True, slots=True)
class Layers:
    """The isolation layers found on this machine."""

    root: bool
    bwrap: str | None
    seccomp_problem: str | None
    landlock_abi: int
    cgroup: CgroupSupport | None
    python: SandboxPython | None
    python_problem: str | None

    def problems(self, profile: Profile) -> list[str]:
        """Why ``profile`` cannot be enforced here (empty: it can), each with the fix."""
        found = []
        if self.bwrap is None:
            found.append("bubblewrap is not installed (apt-get install bubblewrap)")
        if self.seccomp_problem:
            found.append(f"seccomp: {self.seccomp_problem}")
        if self.python is None:
            found.append(f"python: {self.python_problem}")
        if profile.landlock == "required" and not self.landlock_abi:
            found.append("landlock = 'required' but this kernel has no Landlock (Linux 5.13 "
                         "or newer with CONFIG_SECURITY_LANDLOCK and lsm=landlock)")
        if self.cgroup is None and not self.root:
            found.append("processes: no cgroup with memory and pids controllers is delegated "
                         "to this user, and without one RLIMIT_NPROC would count every "
                         "process of this uid; run as root or delegate a cgroup v2 subtree")
        return found

    def require(self, profile: Profile) -> None:
        """Raise ``SandboxUnavailable`` when ``profile`` cannot be enforced here."""
        problems = self.problems(profile)
        if problems:
            raise SandboxUnavailable(f"sandbox profile {profile.name!r} cannot be enforced "
                                     "on this machine: " + "; ".join(problems))

    def describe(self) -> list[tuple[str, str]]:
        """(layer, what was found) rows for ``tether doctor``."""
        cgroup = ("none (limits fall back to rlimits)" if self.cgroup is None else
                  f"v{self.cgroup.version}: memory {self.cgroup.memory_parent}, "
                  f"pids {self.cgroup.pids_parent}")
        return [
            ("runtime uid", "root: each sandbox gets its own unprivileged uid" if self.root
             else f"{os.geteuid()}: sandboxes run as this uid"),
            ("bubblewrap", self.bwrap or "missing (apt-get install bubblewrap)"),
            ("namespaces", "user, mount, pid, net, ipc, uts, cgroup (via bubblewrap)"
             if self.bwrap else "unknown without bubblewrap"),
            ("seccomp", self.seccomp_problem or "yes: default-deny allow-list"),
            ("landlock", f"ABI {self.landlock_abi}" if self.landlock_abi else "not available"),
            ("cgroup", cgroup),
            ("network", "none by default; allow-lists through an HTTP CONNECT proxy on a "
                        "unix socket (no DNS, no UDP)" if not self.seccomp_problem
             else "none (allow-lists need seccomp)"),
            ("python", self.python.executable if self.python else f"{self.python_problem}"),
            ("wasm", "not available (no WASM backend in this version)"),
        ]


def probe(python: str | None = None) -> Layers:
    """Look at this machine (cheap: no process is started)."""
    try:
        found_python: SandboxPython | None = find_sandbox_python(python)
        python_problem = None
    except SandboxError as exc:
        found_python, python_problem = None, exc.message
    return Layers(root=os.geteuid() == 0, bwrap=shutil.which("bwrap"),
                  seccomp_problem=_seccomp_available(), landlock_abi=landlock_abi(),
                  cgroup=find_cgroup_support(), python=found_python,
                  python_problem=python_problem)
