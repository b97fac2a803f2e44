"""Nothing leaks, many runs at once, and killed owners leave containers pbox handles."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest


def _descendants_with(marker: str) -> list[int]:
    """Pids of our user's processes whose command line contains ``marker``."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            if os.stat(f"/proc/{p}").st_uid != os.getuid() and os.getuid() != 0:
                pass
            with open(f"/proc/{p}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue  # exited, not yet reaped by its (new) parent
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    out.append(int(p))
        except OSError:
            continue
    return out


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


def _gone(marker: str, timeout: float = 10.0) -> bool:
    """Whether the processes with ``marker`` end (an owner exits just after it recorded
    the container's exit, which is when rm and reset return)."""
    deadline = time.monotonic() + timeout
    while _descendants_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _descendants_with(marker) == []


def _mounts_under(path: str) -> list[str]:
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/mountinfo") as f:
                found += [ln for ln in f if path in ln]
        except OSError:
            continue
    return found


def test_nothing_left_after_rm_and_rm_flag(bb, run_pbox, pbox_root):
    marker = "leakcheck-4711"
    run_pbox("run", "--rm", bb, "sh", "-c", f"echo {marker} >/dev/null")
    cid = run_pbox("run", "-d", "--name", "lk", bb, "sh", "-c",
                   f"sleep 1000 # {marker}").stdout.strip()
    with open(os.path.join(pbox_root.root, "containers", cid, "state.json")) as f:
        monitor = json.load(f)["MonitorPid"]
    # the command lines of the monitor and the holder have the marker (forked from
    # `run -d`), or the container's id (a monitor exec'd by the CLI)
    found = _descendants_with(marker) + _descendants_with(cid)
    assert monitor in found and len(found) >= 2
    run_pbox("rm", "-f", "lk")
    assert _gone(marker) and _gone(cid)
    assert not os.path.exists(f"/proc/{monitor}/status") or _zombie(monitor)
    assert _mounts_under(pbox_root.root) == []
    assert os.listdir(os.path.join(pbox_root.root, "containers")) in ([], [".names"])
    assert os.listdir(os.path.join(pbox_root.root, "containers", ".names")) == []


@pytest.mark.slow
def test_32_parallel_runs(bb, pbox_cmd, pbox_root):
    env = pbox_root.env_with({"PYTHONPATH": os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))))})
    procs = [subprocess.Popen([*pbox_cmd, "run", "--rm", "--network", "none", bb, "sleep", "1"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(32)]
    results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert [rc for rc, _ in results] == [0] * 32, [e for rc, e in results if rc]
    # the store stays consistent: no container left, no temp entry left
    assert os.listdir(os.path.join(pbox_root.root, "containers", ".names")) == []
    leftover = [n for n in os.listdir(os.path.join(pbox_root.root, "containers"))
                if n != ".names"]
    assert leftover == []


def _state(run_pbox, name):
    return json.loads(run_pbox("inspect", name).stdout)[0]["State"]


def _monitor_pid(pbox_root, name) -> int:
    names = os.path.join(pbox_root.root, "containers", ".names")
    cid = os.readlink(os.path.join(names, name))
    with open(os.path.join(pbox_root.root, "containers", cid, "state.json")) as f:
        return json.load(f)["MonitorPid"]


def _helper_pid(pbox_root, name: str) -> int:
    names = os.path.join(pbox_root.root, "containers", ".names")
    cid = os.readlink(os.path.join(names, name))
    with open(os.path.join(pbox_root.root, "containers", cid, "state.json")) as f:
        pid = (json.load(f).get("NetworkSettings") or {}).get("HelperPid") or 0
    assert pid > 0, "the container has no network helper (the default network is pasta)"
    return pid


def _assert_gone(pid: int) -> None:
    """``pid`` ends (or is a zombie nobody reaps) within 10 s."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rpartition(")")[2].split()[0] == "Z":
                    return
        except OSError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} is still running")


def test_kill_9_of_the_monitor(bb, run_pbox, pbox_root):
    run_pbox("run", "-d", "--name", "orphan", bb, "sleep", "1000")
    ctr_pid = _state(run_pbox, "orphan")["Pid"]
    helper = _helper_pid(pbox_root, "orphan")
    os.kill(_monitor_pid(pbox_root, "orphan"), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{ctr_pid}"):
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{ctr_pid}"), "the container outlived its monitor"
    st = _state(run_pbox, "orphan")
    assert st["Status"] == "exited" and not st["Running"]
    _assert_gone(helper)  # its pasta: nobody else would end it
    assert "Exited (137)" in run_pbox("ps", "-a").stdout
    # it can be started again, and removed
    run_pbox("start", "orphan")
    assert _state(run_pbox, "orphan")["Status"] == "running"
    run_pbox("rm", "-f", "orphan")
    run_pbox("run", "--rm", bb, "true")


def test_kill_9_of_a_foreground_run(bb, pbox_cmd, pbox_root, run_pbox):
    env = pbox_root.env_with({"PYTHONPATH": os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))))})
    p = subprocess.Popen([*pbox_cmd, "run", "--name", "fg", bb, "sleep", "1000"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = run_pbox("ps", "-q", "--filter", "name=fg")
        if r.stdout.strip():
            break
        time.sleep(0.1)
    ctr_pid = _state(run_pbox, "fg")["Pid"]
    helper = _helper_pid(pbox_root, "fg")
    os.kill(_monitor_pid(pbox_root, "fg"), signal.SIGKILL)
    p.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{ctr_pid}"):
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{ctr_pid}")
    assert _state(run_pbox, "fg")["Status"] == "exited"
    _assert_gone(helper)
    run_pbox("rm", "-f", "fg")
    assert run_pbox("ps", "-aq").stdout == ""


def test_system_reset_ends_containers_and_the_pause_process(bb, run_pbox, pbox_root):
    marker = "resetcheck-0815"
    run_pbox("run", "-d", "--name", "rs", bb, "sh", "-c", f"sleep 1000 # {marker}")
    with open(os.path.join(pbox_root.runroot, "pause.pid")) as f:
        pause_pid = int(f.read())
    assert _descendants_with(marker)  # the monitor and the holder, forked from `run -d`
    run_pbox("system", "reset", "-f")
    assert _gone(marker)
    assert not _descendants_with("pbox-pause") or pause_pid not in _descendants_with("pbox-pause")
    assert not os.path.exists(pbox_root.root)


def _signal_mask(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    return 0


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_before_the_container_exists_reaches_it(bb, pbox_cmd, pbox_root, tmp_path,
                                                         sig, code):
    # `run` stops in the middle of creating the container, reading an --env-file that
    # is a FIFO nobody writes yet; the signal arrives then, before any container
    # process exists.  It must not kill pbox (leaving a half-made container) but reach
    # the container once that runs: --init forwards it to `sleep`, which dies of it.
    fifo = str(tmp_path / "env.fifo")
    os.mkfifo(fifo)
    env = pbox_root.env_with({"PYTHONPATH": os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))))})
    p = subprocess.Popen([*pbox_cmd, "run", "--rm", "--init", "--network", "none",
                          "--env-file", fifo, bb, "sleep", "1000"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    bit = 1 << (sig - 1)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and p.poll() is None and \
                not _signal_mask(p.pid, "SigBlk") & bit:
            time.sleep(0.01)
        assert p.poll() is None and _signal_mask(p.pid, "SigBlk") & bit, \
            "pbox run never held its signals back"
        os.kill(p.pid, sig)
        assert _signal_mask(p.pid, "ShdPnd") & bit or _signal_mask(p.pid, "SigPnd") & bit
        with open(fifo, "w") as f:
            f.write("A=1\n")
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == code, err
    assert os.listdir(os.path.join(pbox_root.root, "containers", ".names")) == []


def test_system_reset_ends_the_network_helpers(bb, run_pbox, pbox_root):
    # reset SIGKILLs every container's owner: the owner can no longer stop its pasta
    run_pbox("run", "-d", "--name", "kept", bb, "sleep", "1000")
    helper = _helper_pid(pbox_root, "kept")
    run_pbox("system", "reset", "-f")
    _assert_gone(helper)
