"""The seccomp filter: default deny, an allow-list of the system calls ordinary programs use.

Unknown calls fail with ``EPERM``, so a program probing for a feature falls back instead of
dying. Calls that only serve to escape or to attack the kernel kill the process (``SIGSYS``),
so an attempt is loud. ``socket`` is allowed for unix sockets only (``EACCES`` otherwise): the
sandbox has no network. A profile with a network allow-list also gets TCP sockets over IPv4,
which in its empty network namespace reach only the proxy bridge on ``127.0.0.1`` (Landlock
admits that one port); UDP and raw sockets stay refused, so there is no DNS of its own.
``clone`` may not create namespaces, ``clone3`` (whose flags a filter cannot read) answers
``ENOSYS`` so the C library falls back to ``clone``, and ``ioctl(TIOCSTI)`` (typing into the
terminal) is refused. bubblewrap loads the filter just before it starts the payload.
"""

from __future__ import annotations

import errno
import functools
import os
import tempfile

_ALLOWED = """
    read write readv writev pread64 pwrite64 preadv pwritev preadv2 pwritev2 open openat openat2
    close close_range creat lseek _llseek stat fstat lstat newfstatat statx fstatfs statfs access
    faccessat faccessat2 readlink readlinkat getdents getdents64 getcwd chdir fchdir mkdir mkdirat
    rmdir unlink unlinkat rename renameat renameat2 link linkat symlink symlinkat chmod fchmod
    fchmodat fchmodat2 chown fchown fchownat lchown truncate ftruncate fallocate fsync fdatasync
    sync syncfs sync_file_range utime utimes utimensat futimesat umask flock fcntl dup dup2 dup3
    pipe pipe2 sendfile splice tee copy_file_range mknod mknodat fadvise64 readahead
    getxattr lgetxattr fgetxattr listxattr llistxattr flistxattr setxattr lsetxattr fsetxattr
    removexattr lremovexattr fremovexattr inotify_init inotify_init1 inotify_add_watch
    inotify_rm_watch fanotify_mark memfd_create
    mmap munmap mprotect mremap madvise brk msync mincore mlock mlock2 munlock mlockall munlockall
    membarrier get_mempolicy set_mempolicy mbind pkey_alloc pkey_free pkey_mprotect
    execve execveat fork vfork exit exit_group wait4 waitid kill tkill tgkill getpid getppid
    gettid getpgid setpgid getpgrp getsid setsid getuid geteuid getgid getegid getresuid
    getresgid getgroups setuid setgid setreuid setregid setresuid setresgid setgroups setfsuid
    setfsgid capget prctl arch_prctl set_tid_address set_robust_list get_robust_list rseq futex
    futex_waitv futex_wait futex_wake sched_yield sched_getaffinity sched_setaffinity
    sched_getparam sched_setparam sched_getscheduler sched_setscheduler sched_get_priority_max
    sched_get_priority_min sched_rr_get_interval sched_getattr sched_setattr getpriority
    setpriority getrlimit setrlimit prlimit64 getrusage times sysinfo uname personality
    rt_sigaction rt_sigprocmask rt_sigreturn rt_sigpending rt_sigtimedwait rt_sigqueueinfo
    rt_tgsigqueueinfo rt_sigsuspend sigaltstack signalfd signalfd4 restart_syscall pause alarm
    nanosleep clock_nanosleep clock_gettime clock_getres gettimeofday time getitimer setitimer
    timer_create timer_settime timer_gettime timer_getoverrun timer_delete timerfd_create
    timerfd_settime timerfd_gettime eventfd eventfd2 poll ppoll select pselect6 epoll_create
    epoll_create1 epoll_ctl epoll_wait epoll_pwait epoll_pwait2 getrandom ioprio_get ioprio_set
    socketpair bind connect listen accept accept4 getsockname getpeername sendto recvfrom
    sendmsg recvmsg sendmmsg recvmmsg shutdown setsockopt getsockopt
    shmget shmat shmdt shmctl semget semop semtimedop semctl msgget msgsnd msgrcv msgctl
    mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify mq_getsetattr
    landlock_create_ruleset landlock_add_rule landlock_restrict_self pidfd_open pidfd_send_signal
    pidfd_getfd process_madvise process_mrelease get_thread_area set_thread_area
""".split()  # noqa: SIM905  (a word list reads better than 300 quoted names)

# Calls that only escape the sandbox or attack the kernel: the process dies with SIGSYS.
_KILLED = """
    ptrace process_vm_readv process_vm_writev unshare setns mount umount2 pivot_root chroot
    mount_setattr move_mount open_tree fsopen fsconfig fsmount fspick bpf keyctl add_key
    request_key perf_event_open userfaultfd kexec_load kexec_file_load init_module finit_module
    delete_module open_by_handle_at name_to_handle_at iopl ioperm swapon swapoff reboot syslog
    acct settimeofday clock_settime clock_adjtime adjtimex quotactl vhangup lookup_dcookie
    io_uring_setup io_uring_enter io_uring_register
""".split()  # noqa: SIM905  (a word list reads better than 300 quoted names)

_NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
_AF_UNIX, _AF_INET = 1, 2
_SOCK_STREAM, _SOCK_TYPE_MASK = 1, 0xF  # the type's low bits; the rest are NONBLOCK/CLOEXEC
_IPPROTO_TCP = 6
_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C
_LOW32 = 0xFFFFFFFF


def _export(flt: object) -> bytes:
    with tempfile.TemporaryFile() as out:
        flt.export_bpf(out)  # type: ignore[attr-defined]
        out.seek(0)
        return out.read()


@functools.cache
def seccomp_programs(tcp: bool = False) -> tuple[bytes, ...]:
    """The compiled BPF programs for this machine's architecture (built once per process);
    ``tcp``: also IPv4 TCP sockets, for profiles with a network allow-list.

    Two programs, because libseccomp cannot hold an allowed ``ioctl`` and a refused
    ``ioctl(TIOCSTI)`` in one filter; the kernel runs both and the stricter answer wins.
    """
    import pyseccomp as sc  # type: ignore[import-untyped]

    arch = sc.system_arch()
    allow_list = sc.SyscallFilter(sc.ERRNO(errno.EPERM))
    for name in _ALLOWED:
        if sc.resolve_syscall(arch, name) >= 0:  # not every name exists on every architecture
            allow_list.add_rule(sc.ALLOW, name)
    for name in _KILLED:
        if sc.resolve_syscall(arch, name) >= 0:
            allow_list.add_rule(sc.KILL_PROCESS, name)
    allow_list.add_rule(sc.ALLOW, "ioctl")
    allow_list.add_rule(sc.ALLOW, "clone", sc.Arg(0, sc.MASKED_EQ, _NAMESPACE_FLAGS, 0))
    allow_list.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    allow_list.add_rule(sc.ALLOW, "socket", sc.Arg(0, sc.EQ, _AF_UNIX))
    if tcp:
        # The rules on socket must not overlap: AF_INET is split by type, everything else
        # but AF_UNIX and AF_INET is one range below and one above them.
        for protocol in (0, _IPPROTO_TCP):
            allow_list.add_rule(sc.ALLOW, "socket", sc.Arg(0, sc.EQ, _AF_INET),
                                sc.Arg(1, sc.MASKED_EQ, _SOCK_TYPE_MASK, _SOCK_STREAM),
                                sc.Arg(2, sc.EQ, protocol))
        for kind in range(_SOCK_TYPE_MASK + 1):  # UDP, raw, ... (libseccomp has no MASKED_NE)
            if kind != _SOCK_STREAM:
                allow_list.add_rule(sc.ERRNO(errno.EACCES), "socket",
                                    sc.Arg(0, sc.EQ, _AF_INET),
                                    sc.Arg(1, sc.MASKED_EQ, _SOCK_TYPE_MASK, kind))
        allow_list.add_rule(sc.ERRNO(errno.EACCES), "socket", sc.Arg(0, sc.LT, _AF_UNIX))
        allow_list.add_rule(sc.ERRNO(errno.EACCES), "socket", sc.Arg(0, sc.GT, _AF_INET))
    else:
        allow_list.add_rule(sc.ERRNO(errno.EACCES), "socket", sc.Arg(0, sc.NE, _AF_UNIX))
    terminal = sc.SyscallFilter(sc.ALLOW)
    # The kernel reads ioctl's request as 32 bits: compare only those, or a high bit set
    # would slip TIOCSTI past a full 64-bit comparison.
    for request in (_TIOCSTI, _TIOCLINUX):
        terminal.add_rule(sc.ERRNO(errno.EPERM), "ioctl",
                          sc.Arg(1, sc.MASKED_EQ, _LOW32, request))
    return _export(allow_list), _export(terminal)


def seccomp_fds(tcp: bool = False) -> list[int]:
    """Pipe read ends holding the programs, for ``bwrap --add-seccomp-fd`` (the caller closes
    them)."""
    fds = []
    for program in seccomp_programs(tcp):
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, program)  # a few KiB: well within a pipe's buffer
        finally:
            os.close(write_end)
        fds.append(read_end)
    return fds
