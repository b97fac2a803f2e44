"""become_root / join_userns against the real kernel.

Run as each kind of user: an unprivileged user with a /etc/subuid range (subuid mode),
one without (single mode), and root (no-op).  Each test skips when the invoking user
cannot exercise it.  become_root() forks and exits the calling process, so every test
runs it in a fresh interpreter.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from harness import pause_processes

import pbox
from pbox.rootless import idmap, userns

REPO = os.path.dirname(os.path.dirname(os.path.abspath(pbox.__file__)))
MAPPING = userns.current_mapping()

needs_subuid = pytest.mark.skipif(
    MAPPING.mode != idmap.MODE_SUBUID, reason="needs a user with a /etc/subuid range"
)
needs_unprivileged = pytest.mark.skipif(os.getuid() == 0, reason="needs an unprivileged user")

PRELUDE = """
import os, sys, signal
from pbox.rootless import userns, idmap
notices = []
"""


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop(userns.ENV_MARKER, None)
    return env


def py(code: str, **kw) -> subprocess.Popen:
    src = PRELUDE + textwrap.dedent(code)
    return subprocess.Popen(
        [sys.executable, "-c", src],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def run(code: str) -> subprocess.CompletedProcess:
    p = py(code)
    out, err = p.communicate(timeout=60)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def wait_gone(pid: int, deadline: float = 30.0) -> bool:
    """True once ``pid`` no longer exists (or is a zombie nobody reaped yet)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def read_when_ready(path, deadline: float = 30.0) -> str:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if os.path.exists(path):
            with open(path) as f:
                text = f.read()
            if text.endswith("\n"):
                return text
        time.sleep(0.02)
    raise AssertionError(f"{path} never written")


@needs_subuid
def test_subuid_root_inside_and_owner_mapping(tmp_path):
    target = tmp_path / "owned"
    res = run(
        f"""
        outer = os.getpid()
        userns.become_root(notice=notices.append)
        assert os.getpid() != outer, "subuid mode forks"
        print(os.getuid(), os.getgid(), os.environ.get("PBOX_USERNS"), len(notices))
        open({str(target)!r}, "w").close()
        os.chown({str(target)!r}, 1000, 1000)
        """
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["0", "0", "1", "0"]
    st = os.stat(target)
    assert (st.st_uid, st.st_gid) == (MAPPING.to_host_uid(1000), MAPPING.to_host_gid(1000))
    assert st.st_uid == MAPPING.uid_ranges[1].host + 999


@needs_unprivileged
@pytest.mark.parametrize("code", [0, 3, 255])
def test_exit_code_passes_through(code):
    res = run(f"userns.become_root()\nassert os.getuid() == 0\nsys.exit({code})")
    assert res.returncode == code, res.stderr


@needs_subuid
def test_signal_death_is_128_plus_signal():
    res = run("userns.become_root()\nos.kill(os.getpid(), signal.SIGKILL)")
    assert res.returncode == 128 + signal.SIGKILL


@needs_subuid
def test_sigterm_is_forwarded_to_the_child(tmp_path):
    pidfile = tmp_path / "pid"
    p = py(
        f"""
        userns.become_root()
        with open({str(pidfile)!r}, "w") as f:
            f.write(f"{{os.getpid()}}\\n")
        signal.pause()
        """
    )
    child = int(read_when_ready(pidfile))
    assert child != p.pid
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM
    assert wait_gone(child)


@needs_subuid
def test_parent_sigint_is_ignored_child_decides(tmp_path):
    pidfile = tmp_path / "pid"
    p = py(
        f"""
        userns.become_root()
        signal.signal(signal.SIGINT, lambda *a: sys.exit(42))
        with open({str(pidfile)!r}, "w") as f:
            f.write(f"{{os.getpid()}}\\n")
        signal.pause()
        """
    )
    child = int(read_when_ready(pidfile))
    p.send_signal(signal.SIGINT)  # the parent ignores it and keeps waiting
    os.kill(child, signal.SIGINT)
    p.communicate(timeout=60)
    assert p.returncode == 42


@needs_subuid
def test_killing_the_parent_kills_the_child(tmp_path):
    pidfile = tmp_path / "pid"
    p = py(
        f"""
        userns.become_root()
        with open({str(pidfile)!r}, "w") as f:
            f.write(f"{{os.getpid()}}\\n")
        signal.pause()
        """
    )
    child = int(read_when_ready(pidfile))
    assert os.path.exists(f"/proc/{child}")
    p.kill()
    p.communicate(timeout=60)
    assert wait_gone(child), "child survived its parent"


@needs_subuid
def test_become_root_twice_is_a_noop():
    res = run(
        """
        userns.become_root()
        pid = os.getpid()
        inode = os.stat("/proc/self/ns/user").st_ino
        userns.become_root()
        assert os.getpid() == pid
        assert os.stat("/proc/self/ns/user").st_ino == inode
        m = userns.current_mapping()
        print(m.mode, m.entered, m.to_host_uid(0), m.to_host_uid(1000))
        """
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [
        "subuid",
        "True",
        str(MAPPING.uid),
        str(MAPPING.to_host_uid(1000)),
    ]


@needs_unprivileged
def test_single_mode_squashes_and_notices_once(tmp_path):
    target = tmp_path / "f"
    res = run(
        f"""
        outer = os.getpid()
        m = idmap.IdMapping.single(os.getuid(), os.getgid())
        userns.become_root(m, notice=notices.append)
        userns.become_root(m, notice=notices.append)
        assert os.getpid() == outer, "single mode does not fork"
        print(os.getuid(), os.getgid(), len(notices))
        print(open("/proc/self/uid_map").read().split())
        print(open("/proc/self/setgroups").read().strip())
        open({str(target)!r}, "w").close()
        try:
            os.chown({str(target)!r}, 1000, 1000)
        except OSError as e:
            print("chown refused", e.errno)
        print(notices[0])
        """
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["0", "0", "1"]
    assert lines[1] == str(["0", str(os.getuid()), "1"])
    assert lines[2] == "deny"
    assert lines[3].startswith("chown refused")
    assert "usermod --add-subuids" in lines[4]
    assert os.stat(target).st_uid == os.getuid()


@pytest.mark.skipif(MAPPING.mode != idmap.MODE_SINGLE, reason="needs a user without subuid range")
def test_default_mapping_without_range_is_single():
    res = run(
        """
        outer = os.getpid()
        userns.become_root(notice=notices.append)
        print(os.getpid() == outer, os.getuid(), len(notices))
        """
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "0", "1"]


@pytest.mark.skipif(os.getuid() != 0, reason="needs real root")
def test_root_is_a_noop():
    res = run(
        """
        outer = os.getpid()
        inode = os.stat("/proc/self/ns/user").st_ino
        userns.become_root()
        print(os.getpid() == outer, os.stat("/proc/self/ns/user").st_ino == inode)
        """
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "True"]


@needs_unprivileged
def test_threads_are_refused():
    res = run(
        """
        import threading
        from pbox.errors import RuntimeFailure
        ev = threading.Event()
        t = threading.Thread(target=ev.wait)
        t.start()
        try:
            userns.become_root()
        except RuntimeFailure as e:
            print("refused:", e)
        ev.set()
        t.join()
        print(os.getuid() != 0)
        """
    )
    assert res.returncode == 0, res.stderr
    assert "refused:" in res.stdout and "thread" in res.stdout
    assert res.stdout.split()[-1] == "True"


@needs_unprivileged
def test_join_userns_of_a_running_process(tmp_path):
    pidfile = tmp_path / "pid"
    holder = py(
        f"""
        userns.become_root()
        with open({str(pidfile)!r}, "w") as f:
            f.write(f"{{os.getpid()}}\\n")
        signal.pause()
        """
    )
    try:
        target = int(read_when_ready(pidfile))
        want = os.stat(f"/proc/{target}/ns/user").st_ino
        res = run(
            f"""
            userns.join_userns({target})
            print(os.getuid(), os.stat("/proc/self/ns/user").st_ino)
            """
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == ["0", str(want)]
    finally:
        holder.kill()
        holder.communicate(timeout=60)


@needs_subuid
def test_concurrent_first_commands_share_one_pause_namespace(tmp_path):
    # The pause pid is published only once the process is really pbox-pause (exec'd):
    # before, a command started at the same moment did not recognise it and made a
    # second namespace of its own.
    runroot = str(tmp_path / "run")
    code = f"""
        import os
        os.environ["PBOX_RUNROOT"] = {runroot!r}
        from pbox.rootless import pause
        pause.enter({runroot!r})
        print(os.readlink("/proc/self/ns/user"))
    """
    try:
        procs = [py(code) for _ in range(6)]
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            outs.append(out.strip())
        assert len(set(outs)) == 1, outs
        assert outs[0] != os.readlink("/proc/self/ns/user")
        assert len(pause_processes(runroot)) == 1
    finally:
        for pid in pause_processes(runroot):
            os.kill(pid, signal.SIGKILL)


def _enter(runroot: str) -> None:
    res = run(f"""
        import os
        os.environ["PBOX_RUNROOT"] = {runroot!r}
        from pbox.rootless import pause
        pause.enter({runroot!r})
    """)
    assert res.returncode == 0, res.stderr


@needs_subuid
def test_a_new_pause_process_ends_those_whose_run_root_is_gone(tmp_path):
    """One pause process lives for each run root; a deleted --runroot directory left
    its process behind for good.  The next new pause process ends it (SIGKILL: it
    ignores the rest), and only it."""
    gone, kept, new = (str(tmp_path / name) for name in ("gone", "kept", "new"))
    try:
        _enter(gone)
        _enter(kept)
        before = {r: pause_processes(r) for r in (gone, kept)}
        assert all(len(pids) == 1 for pids in before.values()), before
        for name in os.listdir(gone):
            os.unlink(os.path.join(gone, name))
        os.rmdir(gone)
        _enter(new)
        for _ in range(100):  # killed: gone once its parent (init, a subreaper) reaps it
            if not pause_processes(gone):
                break
            time.sleep(0.05)
        assert pause_processes(gone) == []
        assert pause_processes(kept) == before[kept]
        assert len(pause_processes(new)) == 1
    finally:
        for r in (gone, kept, new):
            for pid in pause_processes(r):
                os.kill(pid, signal.SIGKILL)


@needs_subuid
def test_system_reset_ends_the_pause_process(tmp_path):
    runroot = str(tmp_path / "run")
    env = _env()
    env.update(PBOX_ROOT=str(tmp_path / "root"), PBOX_RUNROOT=runroot)
    try:
        for _ in range(2):  # the second time on a fresh run root: nothing to find
            subprocess.run([sys.executable, "-m", "pbox", "system", "reset", "-f"], env=env,
                           check=True, capture_output=True, timeout=60)
            assert pause_processes(runroot) == []
    finally:
        for pid in pause_processes(runroot):
            os.kill(pid, signal.SIGKILL)
