"""pbox.rootless.syscalls against the kernel: errors as OSError with errno, and the two
calls every namespace join makes without the ctypes package."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from pbox.rootless import syscalls

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_setns_and_unshare_errors_carry_errno():
    with pytest.raises(OSError) as e:
        syscalls.setns(999_999, syscalls.CLONE_NEWUSER)
    assert e.value.errno == errno.EBADF and "setns" in str(e.value)
    with pytest.raises(OSError) as e:
        syscalls.unshare(0x1)  # not a namespace flag
    assert e.value.errno == errno.EINVAL


def test_unshare_and_setns_work_without_the_ctypes_package():
    """In a fresh interpreter: a child unshares a user namespace, the parent joins it
    with setns, and the ctypes package was never imported."""
    script = r"""
import os, sys
from pbox.rootless import syscalls
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    syscalls.unshare(syscalls.CLONE_NEWUSER)
    os.write(w, b"x")
    __import__("time").sleep(30)  # until the parent has joined (it kills us then)
    os._exit(0)
os.read(r, 1)
mine = os.readlink("/proc/self/ns/user")
fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY)
theirs = os.readlink(f"/proc/{pid}/ns/user")
syscalls.setns(fd, syscalls.CLONE_NEWUSER)
print(mine != theirs, os.readlink("/proc/self/ns/user") == theirs, "ctypes" in sys.modules)
os.kill(pid, 9)
os.waitpid(pid, 0)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=REPO), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "False"]


def test_the_ctypes_calls_still_work():
    assert isinstance(syscalls.get_no_new_privs(), bool)
    syscalls.set_pdeathsig(0)
    assert syscalls.get_pdeathsig() == 0
    eff, perm, inh = syscalls.capget()
    assert all(isinstance(x, int) for x in (eff, perm, inh))
    with pytest.raises(OSError) as e:
        syscalls.mount_setattr("/nonexistent/path", syscalls.MOUNT_ATTR_RDONLY)
    assert e.value.errno in (errno.ENOENT, errno.ENOSYS, errno.EPERM)


def _in_python(script: str, *args: str) -> subprocess.CompletedProcess:
    """``script`` run by a fresh interpreter on this checkout's pbox; it must succeed."""
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=REPO), timeout=60)
    assert r.returncode == 0, r.stderr
    return r


def _faults_of_second_buffer(keep: bool) -> int:
    """Page faults (in a fresh interpreter) of writing an 8 MiB buffer after another one
    was written and freed."""
    script = r"""
import resource, sys
from pbox.rootless import syscalls
if sys.argv[1] == "keep":
    assert syscalls.keep_freed_memory()
    assert "ctypes" not in sys.modules
first = b"\x01" * (8 << 20)
del first
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
second = b"\x02" * (8 << 20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    return int(_in_python(script, "keep" if keep else "default").stdout)


def test_keep_freed_memory_reuses_freed_buffers():
    """By default glibc maps an 8 MiB buffer afresh (2048 pages to fault in); once
    told to keep freed memory, the second buffer takes the first one's pages."""
    assert _faults_of_second_buffer(keep=False) >= 1500
    assert _faults_of_second_buffer(keep=True) < 200


def _arenas_after_a_thread_allocates(one_arena: bool, released: bool = False) -> int:
    """glibc's malloc arenas (``malloc_stats``) once a thread started after
    ``keep_freed_memory`` (and ``release_freed_memory``, with ``released``) has
    allocated a few MiB, in a fresh interpreter."""
    script = r"""
import ctypes, sys, threading
from pbox.rootless import syscalls
assert syscalls.keep_freed_memory(one_arena=sys.argv[1] == "one")
if sys.argv[2] == "released":
    syscalls.release_freed_memory()
def work():
    bufs = [b"\x01" * (1 << 20) for _ in range(4)]
    del bufs
t = threading.Thread(target=work)
t.start()
t.join()
ctypes.CDLL(None).malloc_stats()
"""
    r = _in_python(script, "one" if one_arena else "default",
                   "released" if released else "kept")
    return sum(1 for line in r.stderr.splitlines() if line.startswith("Arena "))


def test_keep_freed_memory_can_keep_new_threads_in_the_main_arena():
    """A thread allocates from an arena of its own by default (fresh pages); with
    ``one_arena`` from the main one, as the small layer's inflating thread does."""
    assert _arenas_after_a_thread_allocates(one_arena=False) >= 2
    assert _arenas_after_a_thread_allocates(one_arena=True) == 1
    # and a process that goes on after its pull has glibc's default again
    assert _arenas_after_a_thread_allocates(one_arena=True, released=True) >= 2


def test_release_freed_memory_gives_kept_memory_back():
    """After a pull, a process that goes on (a container's owner) must not hold the
    buffers the pull freed: kept ones are resident until released."""
    script = r"""
import sys
from pbox.rootless import syscalls

def rss_kib():
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS:")).split()[1])

assert syscalls.keep_freed_memory()
chunks = [b"\x01" * (1 << 20) for _ in range(32)]
del chunks
kept = rss_kib()
syscalls.release_freed_memory()
print(kept - rss_kib())
"""
    assert int(_in_python(script).stdout) > 24 << 10  # KiB: most of the 32 MiB freed
