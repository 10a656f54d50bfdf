"""crirt's RuntimeDefault seccomp profile, in the Docker/containers profile format (pure data).

An allow-list: anything not named fails with EPERM (``defaultErrnoRet`` 1). It allows what the
default profiles of Docker, containerd and CRI-O allow, with two deliberate differences:
io_uring is not allowed (a long record of kernel escapes; Docker dropped it in 2023 too), and
syscalls that only make sense with a capability (mount, sethostname, setns, unshare, chroot,
reboot, module loading, clock setting, ...) are allowed only when the container's bounding set
holds that capability. Namespace-creating ``clone`` flags need CAP_SYS_ADMIN; ``clone3`` (whose
flags sit in memory seccomp cannot read) answers ENOSYS without it, so libc falls back to clone.

Newer syscalls the local libseccomp does not know are skipped by runc, which also answers ENOSYS
(not EPERM) for syscalls newer than the profile, so libc fallbacks keep working.
"""

from __future__ import annotations

from typing import Any

_ERRNO_EPERM = 1
_ERRNO_ENOSYS = 38

# Namespace flags a process may not pass to clone(2) without CAP_SYS_ADMIN:
# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
# | CLONE_NEWNET.
_CLONE_NS_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
_CLONE_NS_FLAGS |= 0x40000000

# personality(2) values programs legitimately use: PER_LINUX, PER_LINUX32, UNAME26,
# UNAME26|PER_LINUX32, and 0xffffffff (query the current persona).
_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

_ALLOWED: dict[str, tuple[str, ...]] = {
    "process": (
        "alarm", "brk", "capget", "capset", "execve", "execveat", "exit", "exit_group", "fork",
        "get_robust_list", "get_thread_area", "getcpu", "getpgid", "getpgrp", "getpid",
        "getppid", "getpriority", "getrlimit", "getrusage", "getsid", "gettid", "membarrier",
        "pause", "pidfd_open", "pidfd_send_signal", "prctl", "prlimit64", "process_mrelease",
        "restart_syscall", "rseq", "seccomp", "set_robust_list", "set_thread_area",
        "set_tid_address", "setpgid", "setpriority", "setrlimit", "setsid", "times",
        "ugetrlimit", "vfork", "wait4", "waitid", "waitpid",
        # Since Linux 4.8 ptrace cannot be used to get around seccomp.
        "process_vm_readv", "process_vm_writev", "ptrace",
    ),
    "scheduling": (
        "ioprio_get", "ioprio_set", "sched_get_priority_max", "sched_get_priority_min",
        "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_getscheduler",
        "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
        "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield",
    ),
    "credentials": (
        "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
        "getgroups32", "getresgid", "getresgid32", "getresuid", "getresuid32", "getuid",
        "getuid32", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
        "setgroups", "setgroups32", "setregid", "setregid32", "setresgid", "setresgid32",
        "setresuid", "setresuid32", "setreuid", "setreuid32", "setuid", "setuid32",
    ),
    "signals": (
        "kill", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
        "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
        "rt_tgsigqueueinfo", "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn",
        "tgkill", "tkill",
    ),
    "time": (
        # adjtimex/clock_adjtime only read the clock without CAP_SYS_TIME (the kernel checks).
        "adjtimex", "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64",
        "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64",
        "getitimer", "gettimeofday", "nanosleep", "setitimer", "time", "timer_create",
        "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
        "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
        "timerfd_settime", "timerfd_settime64",
    ),
    "memory": (
        "madvise", "map_shadow_stack", "memfd_create", "memfd_secret", "mincore", "mlock",
        "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mremap", "mseal", "msync", "munlock",
        "munlockall", "munmap", "pkey_alloc", "pkey_free", "pkey_mprotect", "remap_file_pages",
    ),
    "files": (
        "_llseek", "access", "cachestat", "chdir", "chmod", "chown", "chown32", "close",
        "close_range", "copy_file_range", "creat", "dup", "dup2", "dup3", "faccessat",
        "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fchdir", "fchmod", "fchmodat",
        "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "flock",
        "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
        "ftruncate64", "futimesat", "getcwd", "getdents", "getdents64", "lchown", "lchown32",
        "link", "linkat", "lseek", "lstat", "lstat64", "mkdir", "mkdirat", "mknod", "mknodat",
        "name_to_handle_at", "newfstatat", "open", "openat", "openat2", "pread64", "preadv",
        "preadv2", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
        "readlinkat", "readv", "rename", "renameat", "renameat2", "rmdir", "sendfile",
        "sendfile64", "splice", "stat", "stat64", "statfs", "statfs64", "statx", "symlink",
        "symlinkat", "sync", "sync_file_range", "syncfs", "tee", "truncate", "truncate64",
        "umask", "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64", "utimes",
        "vmsplice", "write", "writev",
    ),
    "xattrs": (
        "fgetxattr", "flistxattr", "fremovexattr", "fsetxattr", "getxattr", "getxattrat",
        "lgetxattr", "listxattr", "listxattrat", "llistxattr", "lremovexattr", "lsetxattr",
        "removexattr", "removexattrat", "setxattr", "setxattrat",
    ),
    "events": (
        "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
        "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "fanotify_mark",
        "futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake",
        "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel",
        "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64", "io_setup",
        "io_submit", "pipe", "pipe2", "poll", "ppoll", "ppoll_time64", "pselect6",
        "pselect6_time64", "select", "_newselect",
    ),
    "ipc": (
        "ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
        "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "msgctl",
        "msgget", "msgrcv", "msgsnd", "semctl", "semget", "semop", "semtimedop",
        "semtimedop_time64", "shmat", "shmctl", "shmdt", "shmget",
    ),
    "network": (
        "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt",
        "listen", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "send",
        "sendmmsg", "sendmsg", "sendto", "setsockopt", "shutdown", "socketcall", "socketpair",
    ),
    "system": (
        "getrandom", "ioctl", "landlock_add_rule", "landlock_create_ruleset",
        "landlock_restrict_self", "sysinfo", "uname",
    ),
}  # fmt: skip

# Syscalls allowed only when the bounding set holds the capability the kernel would check.
_BY_CAPABILITY: dict[str, tuple[str, ...]] = {
    "CAP_SYS_ADMIN": (
        "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
        "lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree",
        "perf_event_open", "quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns",
        "syslog", "umount", "umount2", "unshare",
    ),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_CHROOT": ("chroot",),
    "CAP_SYS_MODULE": ("delete_module", "finit_module", "init_module"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_SYS_PTRACE": ("kcmp", "pidfd_getfd", "process_madvise"),
    "CAP_SYS_RAWIO": ("ioperm", "iopl"),
    "CAP_SYS_TIME": ("clock_settime", "clock_settime64", "settimeofday", "stime"),
    "CAP_SYS_TTY_CONFIG": ("vhangup",),
    "CAP_SYS_NICE": ("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"),
    "CAP_SYSLOG": ("syslog",),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open",),
    "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
}  # fmt: skip

# Architecture-specific syscalls, keyed by GOARCH names as profile conditions use them.
_BY_ARCH: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("amd64", "x32"), ("arch_prctl",)),
    (("amd64", "x32", "x86"), ("modify_ldt",)),
    (
        ("arm", "arm64"),
        ("arm_fadvise64_64", "arm_sync_file_range", "breakpoint", "cacheflush", "set_tls",
         "sync_file_range2"),
    ),
    (("ppc64le",), ("swapcontext", "sync_file_range2")),
    (("s390", "s390x"), ("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr")),
    (("riscv64",), ("riscv_flush_icache",)),
)  # fmt: skip

_ARCH_MAP: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SCMP_ARCH_X86_64", ("SCMP_ARCH_X86", "SCMP_ARCH_X32")),
    ("SCMP_ARCH_AARCH64", ("SCMP_ARCH_ARM",)),
    ("SCMP_ARCH_PPC64LE", ()),
    ("SCMP_ARCH_S390X", ("SCMP_ARCH_S390",)),
    ("SCMP_ARCH_RISCV64", ()),
)


def default_profile() -> dict[str, Any]:
    """A fresh copy of the RuntimeDefault profile (Docker format; see module docstring)."""
    allowed = sorted({name for group in _ALLOWED.values() for name in group})
    rules: list[dict[str, Any]] = [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]
    # socket(2) for every family except AF_VSOCK (40), which reaches the hypervisor.
    rules.append(
        {
            "names": ["socket"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}],
        }
    )
    rules.extend(
        {
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}],
        }
        for v in _PERSONALITIES
    )
    for arches, names in _BY_ARCH:
        rules.append(
            {"names": list(names), "action": "SCMP_ACT_ALLOW", "includes": {"arches": list(arches)}}
        )
    for cap, names in _BY_CAPABILITY.items():
        rules.append(
            {"names": list(names), "action": "SCMP_ACT_ALLOW", "includes": {"caps": [cap]}}
        )
    # Without CAP_SYS_ADMIN: clone(2) only without namespace flags (flags are argument 0, or
    # argument 1 on s390), and clone3(2) reports ENOSYS so libc falls back to clone(2).
    rules.append(
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": _CLONE_NS_FLAGS, "op": "SCMP_CMP_MASKED_EQ"}],
            "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]},
        }
    )
    rules.append(
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 1, "value": _CLONE_NS_FLAGS, "op": "SCMP_CMP_MASKED_EQ"}],
            "includes": {"arches": ["s390", "s390x"]},
            "excludes": {"caps": ["CAP_SYS_ADMIN"]},
        }
    )
    rules.append(
        {
            "names": ["clone3"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": _ERRNO_ENOSYS,
            "excludes": {"caps": ["CAP_SYS_ADMIN"]},
        }
    )
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": _ERRNO_EPERM,
        "archMap": [
            {"architecture": native, "subArchitectures": list(subs)} for native, subs in _ARCH_MAP
        ],
        "syscalls": rules,
    }
