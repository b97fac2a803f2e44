"""exec, attach and top against running containers, as the test user."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time

import pytest
from harness import has_subuid

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKER_TOP_TITLES = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]


@pytest.fixture
def containers(run_pbox):
    """Names to `rm -f` at the end of the test."""
    names: list[str] = []
    yield names
    for name in names:
        run_pbox("rm", "-f", name, check=False)


@pytest.fixture
def sleeper(bb, run_pbox, containers):
    """A detached busybox container ``ex1`` running ``sleep 1000``."""
    containers.append("ex1")
    run_pbox("run", "-d", "--name", "ex1", bb, "sleep", "1000")
    return "ex1"


@pytest.fixture
def pbox_env(pbox_cmd, pbox_root):
    """(argv prefix, environment) to start pbox in the background like run_pbox does."""
    env = pbox_root.env_with(None)
    if pbox_cmd[1:2] == ["-m"]:
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + path if path else "")
    return list(pbox_cmd), env


def _wait_for(fn, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.05)
    return False


def _comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode().strip()
    except OSError:
        return None


def _top_rows(run_pbox, name, *ps_args):
    lines = run_pbox("top", name, *ps_args).stdout.splitlines()
    return lines[0].split(), [line.split(None, len(lines[0].split()) - 1) for line in lines[1:]]


def test_exec_output_and_exit_codes(sleeper, run_pbox):
    assert run_pbox("exec", sleeper, "echo", "hello").stdout == "hello\n"
    r = run_pbox("exec", sleeper, "sh", "-c", "echo out; echo err >&2")
    assert r.stdout == "out\n" and r.stderr == "err\n"
    assert run_pbox("exec", sleeper, "sh", "-c", "exit 3", expect_rc=3).returncode == 3
    r = run_pbox("exec", sleeper, "no-such-cmd", expect_rc=127)
    assert r.stderr.startswith("Error: ") and "no-such-cmd" in r.stderr
    r = run_pbox("exec", sleeper, "/etc/passwd", expect_rc=126)
    assert r.stderr.startswith("Error: ") and "/etc/passwd" in r.stderr
    # stdin only with -i
    assert run_pbox("exec", "-i", sleeper, "cat", input="piped\n").stdout == "piped\n"
    assert run_pbox("exec", sleeper, "cat", input="piped\n").stdout == ""
    # the `container` group has it too
    assert run_pbox("container", "exec", sleeper, "echo", "ok").stdout == "ok\n"


def test_exec_env_workdir_user_and_privileges(bb, run_pbox, containers, tmp_path):
    containers.append("ex2")
    run_pbox("run", "-d", "--name", "ex2", "-e", "FROMRUN=r", "-e", "OVER=run", "-w", "/work",
             "--security-opt", "no-new-privileges", bb, "sleep", "1000")
    envfile = tmp_path / "env"
    envfile.write_text("# comment\nFROMFILE=f\n")
    out = run_pbox("exec", "-e", "A=1", "-e", "OVER=exec", "--env-file", str(envfile), "ex2",
                   "sh", "-c", "echo $FROMRUN $A $FROMFILE $OVER $HOME $HOSTNAME; echo $PATH")
    first, path = out.stdout.splitlines()
    cid = run_pbox("inspect", "-f", "{{.Id}}", "ex2").stdout.strip()
    assert first.split() == ["r", "1", "f", "exec", "/root", cid[:12]]
    assert "/bin" in path.split(":")
    r = run_pbox("exec", "-e", "HOSTVAR", "ex2", "sh", "-c", "echo $HOSTVAR",
                 env={"HOSTVAR": "from-host"})
    assert r.stdout == "from-host\n"
    # the container's working directory by default, -w otherwise
    assert run_pbox("exec", "ex2", "pwd").stdout == "/work\n"
    assert run_pbox("exec", "-w", "/tmp", "ex2", "pwd").stdout == "/tmp\n"
    r = run_pbox("exec", "-w", "/not/there", "ex2", "pwd", expect_rc=125)
    assert r.stderr.startswith("Error: ") and "/not/there" in r.stderr
    # the container's capabilities and no_new_privs; --privileged gives more
    out = run_pbox("exec", "ex2", "sh", "-c", "grep -E '^(CapEff|CapBnd|NoNewPrivs)' "
                   "/proc/self/status; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/1/status")
    mine, pid1 = out.stdout.splitlines()[:3], out.stdout.splitlines()[3:]
    assert mine == pid1 and mine[0].split()[1] == "00000000a80425fb"
    assert mine[2].split()[1] == "1"
    out = run_pbox("exec", "--privileged", "ex2", "grep", "CapEff", "/proc/self/status")
    assert int(out.stdout.split()[1], 16) & ~0xA80425FB
    if has_subuid():
        # resolved against the container's /etc/passwd (user:x:1000:1000)
        r = run_pbox("exec", "-u", "1000", "ex2", "sh", "-c", "id -u; id -g")
        assert r.stdout == "1000\n1000\n"
        r = run_pbox("exec", "-u", "nobody:user", "ex2", "sh", "-c", "id -un; id -g")
        assert r.stdout == "nobody\n1000\n"
    else:
        r = run_pbox("exec", "-u", "1000", "ex2", "id", "-u", expect_rc=125)
        assert "subordinate" in r.stderr


def test_exec_default_user_is_the_containers(bb, run_pbox, containers):
    if not has_subuid():
        pytest.skip("needs a subordinate id range (a container of uid 1000)")
    containers.append("ex3")
    run_pbox("run", "-d", "--name", "ex3", "-u", "1000:1000", bb, "sleep", "1000")
    assert run_pbox("exec", "ex3", "sh", "-c", "id -u; id -g").stdout == "1000\n1000\n"
    assert run_pbox("exec", "-u", "0", "ex3", "id", "-u").stdout == "0\n"


def test_exec_joins_the_containers_namespaces(bb, run_pbox, containers):
    containers.append("ex4")
    run_pbox("run", "-d", "--name", "ex4", "--hostname", "exhost", "--network", "none", bb,
             "sleep", "1000")
    # PID 1 of the same pid namespace is the container's command
    out = run_pbox("exec", "ex4", "cat", "/proc/1/cmdline").stdout
    assert out == "sleep\x001000\x00"
    assert run_pbox("exec", "ex4", "hostname").stdout == "exhost\n"
    script = ('for n in pid mnt uts ipc net user cgroup; do '
              '[ "$(readlink /proc/self/ns/$n)" = "$(readlink /proc/1/ns/$n)" ] '
              '|| echo "differs: $n"; done; echo checked')
    assert run_pbox("exec", "ex4", "sh", "-c", script).stdout == "checked\n"
    assert run_pbox("exec", "ex4", "ls", "/sys/class/net").stdout.split() == ["lo"]
    # the same mount namespace: a file written by one exec is seen by the next
    run_pbox("exec", "ex4", "sh", "-c", "echo shared > /tmp/f")
    assert run_pbox("exec", "ex4", "cat", "/tmp/f").stdout == "shared\n"
    # ... and the root is the container's, not the host's
    r = run_pbox("exec", "ex4", "sh", "-c", f"test -e {REPO_ROOT} && echo host || echo ctr")
    assert r.stdout == "ctr\n"


def test_exec_detach_and_top(sleeper, run_pbox):
    r = run_pbox("exec", "-d", sleeper, "sleep", "2000")
    assert r.stdout == "" and r.stderr == ""
    pid1 = int(run_pbox("inspect", "-f", "{{.State.Pid}}", sleeper).stdout)
    titles, rows = _top_rows(run_pbox, sleeper)
    assert titles == DOCKER_TOP_TITLES
    by_cmd = {row[-1]: row for row in rows}
    assert sorted(by_cmd) == ["sleep 1000", "sleep 2000"]
    assert int(by_cmd["sleep 1000"][1]) == pid1  # host pids, as docker shows
    assert _comm(int(by_cmd["sleep 2000"][1])) == "sleep 2000"
    assert all(row[5] == "?" and row[6].count(":") == 2 for row in rows)
    # ps options go to the host's ps; its rows are filtered to the container
    titles, rows = _top_rows(run_pbox, sleeper, "-o", "pid,args")
    assert titles == ["PID", "COMMAND"]
    assert sorted(row[1] for row in rows) == ["sleep 1000", "sleep 2000"]
    assert pid1 in {int(row[0]) for row in rows}
    r = run_pbox("container", "top", sleeper, "-o", "comm", expect_rc=125)
    assert r.stderr.startswith("Error: ") and "PID" in r.stderr
    # what exec started dies with the container
    sleep2000 = int(by_cmd["sleep 2000"][1])
    run_pbox("stop", "-t", "0", sleeper)
    assert _wait_for(lambda: _comm(sleep2000) != "sleep 2000")


def test_exec_and_top_need_a_running_container(bb, run_pbox, containers):
    containers.append("ex5")
    run_pbox("create", "--name", "ex5", bb, "sleep", "1000")
    r = run_pbox("exec", "ex5", "true", expect_rc=125)
    assert r.stderr == "Error: container ex5 is not running\n"
    r = run_pbox("top", "ex5", expect_rc=125)
    assert "is not running" in r.stderr
    run_pbox("start", "ex5")
    assert run_pbox("exec", "ex5", "echo", "up").stdout == "up\n"
    run_pbox("stop", "-t", "0", "ex5")
    r = run_pbox("exec", "ex5", "true", expect_rc=125)
    assert r.stderr == "Error: container ex5 is not running\n"
    r = run_pbox("exec", "nosuchctr", "true", expect_rc=125)
    assert "No such container: nosuchctr" in r.stderr


def test_exec_forwards_signals_and_dies_with_pbox(sleeper, run_pbox, pbox_env):
    argv, env = pbox_env
    p = subprocess.Popen([*argv, "exec", sleeper, "sh", "-c",
                          "trap 'echo got-term; exit 9' TERM; echo ready; "
                          "while :; do sleep 0.1; done"],
                         env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"ready\n"
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
        assert out == b"got-term\n" and p.returncode == 9, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    # killing pbox exec kills the command (it would otherwise be nobody's)
    p = subprocess.Popen([*argv, "exec", sleeper, "sh", "-c", "echo ready; exec sleep 3000"],
                         env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"ready\n"
        _, rows = _top_rows(run_pbox, sleeper, "-o", "pid,args")
        host_pid = next(int(pid) for pid, cmd in rows if cmd == "sleep 3000")
        p.kill()
        p.wait()
        assert _wait_for(lambda: _comm(host_pid) != "sleep 3000")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()


def _run_on_pty(argv, env, script: bytes, prompt: bytes = b"# "):
    """Run argv on a new pty of 30x100; send ``script`` once ``prompt`` shows; (output, exit code)."""
    pid, fd = pty.fork()
    if pid == 0:
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    buf = b""
    sent = False
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 120)
            assert ready, f"no output from {argv} for 120s; so far: {buf!r}"
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: the other side is closed
                break
            if not data:
                break
            buf += data
            if not sent and prompt in buf:
                os.write(fd, script)
                sent = True
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return buf, os.waitstatus_to_exitcode(status)


def test_exec_tty(sleeper, run_pbox, pbox_env):
    argv, env = pbox_env
    out, code = _run_on_pty([*argv, "exec", "-it", sleeper, "sh"], env,
                            b"echo $((6*7)); [ -t 0 ] && echo tty-$((2+3)); stty size; tty\n"
                            b"exit 5\n")
    assert b"42\r\n" in out and b"tty-5\r\n" in out
    # the terminal is the container's own (ttyname works) and has our window size
    assert b"30 100\r\n" in out and re.search(rb"\n/dev/pts/\d+\r\n", out), out
    assert code == 5, out
    # -t without -i and without a terminal of ours: output through the pty
    r = run_pbox("exec", "-t", sleeper, "sh", "-c", "[ -t 1 ] && echo tty; echo $TERM")
    assert r.stdout == "tty\r\nxterm\r\n"
    if has_subuid():
        # another user's terminal is theirs
        r = run_pbox("exec", "-t", "-u", "1000", sleeper, "sh", "-c",
                     "id -u; stat -c %u $(tty)")
        assert r.stdout == "1000\r\n1000\r\n"


def test_attach_follows_output_until_exit(bb, run_pbox, containers, pbox_env):
    argv, env = pbox_env
    containers.append("ex6")
    run_pbox("run", "-d", "--name", "ex6", bb, "sh", "-c",
             "while [ ! -e /stop ]; do echo tick; echo tock >&2; sleep 0.1; done; "
             "echo last; echo last-err >&2; exit 7")
    p = subprocess.Popen([*argv, "attach", "--no-stdin", "ex6"], env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"tick\n"  # attached: output flows from now on
        run_pbox("exec", "ex6", "touch", "/stop")
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 7, err
    # (the first tick was read above; more may or may not have come before /stop)
    assert set(out.splitlines()) <= {b"tick", b"last"} and out.endswith(b"last\n")
    assert set(err.splitlines()) <= {b"tock", b"last-err"} and err.endswith(b"last-err\n")
    r = run_pbox("attach", "ex6", expect_rc=125)
    assert r.stderr.startswith("Error: ") and "stopped container" in r.stderr


def test_attach_to_a_tty_container(bb, run_pbox, containers, pbox_env):
    argv, env = pbox_env
    containers.append("ex7")
    run_pbox("run", "-d", "-t", "--name", "ex7", bb, "sh", "-c",
             "while [ ! -e /stop ]; do echo tick; sleep 0.1; done; echo last; exit 4")
    p = subprocess.Popen([*argv, "attach", "ex7"], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"tick\r\n"
        run_pbox("exec", "ex7", "touch", "/stop")
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 4, err
    assert out.endswith(b"last\r\n")


@pytest.mark.parametrize("tty", [False, True])
def test_attach_feeds_the_stdin_of_a_container_made_with_i(bb, run_pbox, containers, pbox_env,
                                                           tty):
    argv, env = pbox_env
    name = "ex8t" if tty else "ex8"
    containers.append(name)
    run_pbox("run", "-d", "-i", *(["-t"] if tty else []), "--name", name, bb, "sh", "-c",
             'read line; echo "got $line"; read more; echo "and $more"; exit 3')
    # two attaches one after the other: the first one's end of input leaves the
    # container's stdin open for the next
    p1 = subprocess.Popen([*argv, "attach", name], env=env, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p1.stdin.write(b"hello\n")
        p1.stdin.close()
        line = p1.stdout.readline()
        assert b"got hello" in line or b"got hello" in p1.stdout.readline()
        p2 = subprocess.Popen([*argv, "attach", name], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            p2.stdin.write(b"world\n")
            p2.stdin.close()
            out2, err2 = p2.stdout.read(), p2.stderr.read()
            p2.wait(timeout=60)
        finally:
            if p2.poll() is None:
                p2.kill()
                p2.wait()
        out1, err1 = p1.stdout.read(), p1.stderr.read()
        p1.wait(timeout=60)
    finally:
        if p1.poll() is None:
            p1.kill()
            p1.wait()
    assert p2.returncode == 3 and p1.returncode == 3, (err1, err2)
    assert b"and world" in out2 and b"and world" in out1
    assert b"stdin is not attached" not in err1 + err2


def test_start_a_i_feeds_stdin(bb, run_pbox, containers):
    containers.append("ex9")
    run_pbox("create", "-i", "--name", "ex9", bb, "sh", "-c", 'read line; echo "got $line"; exit 2')
    r = run_pbox("start", "-a", "-i", "ex9", input="hello\n", expect_rc=2)
    assert r.stdout == "got hello\n"
    # without -i the container's stdin is /dev/null: read fails at once
    r = run_pbox("start", "-a", "ex9", input="again\n", expect_rc=2)
    assert r.stdout == "got \n"
