"""Run Python code under a simulated Windows ``os``: what CPython 3.12 on Windows lacks is
taken away before anything of ours is imported, so that a POSIX-only call in a code path the
Windows sensor takes fails here as it would on the first real host.

Only the platform surface changes (os and signal attributes, POSIX-only modules, ``O_BINARY``
added); paths stay POSIX paths, and nothing here stands in for a Windows API (win32.py has its
own stand-ins). The lists are Python 3.12's documented availability ("Availability: Unix").
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.conftest import ROOT

# os functions and flags that Windows' CPython 3.12 does not have.
MISSING_OS = (
    "fchmod", "fchown", "chown", "lchown", "lchmod", "geteuid", "getuid", "getegid", "getgid",
    "getgroups", "setuid", "setgid", "seteuid", "setegid", "setgroups", "initgroups",
    "getresuid", "getresgid", "setresuid", "setresgid", "getpgid", "setpgid", "getsid",
    "setsid", "killpg", "fork", "forkpty", "wait3", "wait4", "waitid", "WNOHANG",
    "O_CLOEXEC", "O_NOFOLLOW", "O_DIRECTORY", "O_NONBLOCK", "O_SYNC", "O_DSYNC", "O_NOCTTY",
    "O_NOATIME", "O_PATH", "O_ASYNC", "O_LARGEFILE", "O_DIRECT", "fdatasync", "sync", "statvfs",
    "fstatvfs", "mkfifo", "mknod", "major", "minor", "makedev", "pipe2", "posix_spawn",
    "posix_spawnp", "sched_getaffinity", "sched_setaffinity", "getloadavg", "uname", "nice",
    "getpriority", "setpriority", "pread", "pwrite", "readv", "writev", "sendfile", "openpty",
    "ttyname", "ctermid", "lockf", "posix_fadvise", "posix_fallocate", "memfd_create",
    "eventfd", "splice", "copy_file_range", "getxattr", "setxattr", "listxattr",
    "removexattr", "chroot", "fchdir", "fpathconf", "pathconf", "sysconf", "confstr",
    "sched_yield", "EX_OK", "WIFEXITED", "WEXITSTATUS", "WIFSIGNALED", "WTERMSIG",
    "register_at_fork",
)
# Signals Windows does not have (it has SIGINT, SIGTERM, SIGABRT, SIGBREAK, SIGFPE, SIGILL,
# SIGSEGV).
MISSING_SIGNALS = ("SIGKILL", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGPIPE", "SIGALRM",
                   "SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP")
# Modules that do not exist on Windows.
MISSING_MODULES = ("pwd", "grp", "fcntl", "resource", "termios", "posix", "pty", "tty",
                   "syslog")
O_BINARY = 0x8000   # msvcrt's value

# The standard library's own POSIX branches are imported first, as they are: on Windows they
# take their Windows branches, which is not what is under test.
STDLIB_FIRST = ("subprocess", "tempfile", "shutil", "socket", "selectors", "threading",
                "asyncio", "ssl", "uuid", "pathlib", "logging", "multiprocessing", "getpass",
                "mimetypes", "platform", "ctypes", "sqlite3", "json", "zipfile", "tarfile")

PRELUDE = f"""
import os, signal, sys
for _module in {STDLIB_FIRST!r}:
    __import__(_module)
for _name in {MISSING_OS!r}:
    if hasattr(os, _name):
        delattr(os, _name)
for _name in {MISSING_SIGNALS!r}:
    if hasattr(signal, _name):
        delattr(signal, _name)
for _name in {MISSING_MODULES!r}:
    sys.modules[_name] = None   # import raises ImportError, as on Windows
os.O_BINARY = {O_BINARY}
"""


def run_as_windows(code: str, env: dict[str, str] | None = None,
                   timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` (a script) under the simulation in a fresh interpreter; stdout and
    stderr captured as bytes."""
    script = PRELUDE + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=timeout)
